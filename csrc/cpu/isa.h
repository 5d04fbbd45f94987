// Instruction sets the CPU backend is compiled for, and which one runs.
#pragma once

namespace golden::cpu {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
// True in a GOLDEN_EMULATE_AVX512 build: the avx512 kernels are AVX2 code with
// the AVX-512 path's vector width, run wherever AVX2 is (for testing).
bool avx512_emulated();
// The widest supported set, unless GOLDEN_KERNELS_CPU_ISA or set_isa() chose one.
Isa active_isa();
// Throws std::invalid_argument for an unknown name or an unsupported set.
void set_isa(const char* name);

}  // namespace golden::cpu
