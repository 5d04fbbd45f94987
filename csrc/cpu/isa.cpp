#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace golden::cpu {
namespace {

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512};

Isa widest_supported() {
  return isa_supported(Isa::avx512) ? Isa::avx512 : isa_supported(Isa::avx2) ? Isa::avx2 : Isa::scalar;
}

Isa parse_isa(const char* name) {
  for (Isa isa : kAllIsas) {
    if (std::strcmp(name, isa_name(isa)) != 0) continue;
    if (!isa_supported(isa)) {
      throw std::invalid_argument(std::string("CPU instruction set '") + name +
                                  "' is not supported by this processor");
    }
    return isa;
  }
  throw std::invalid_argument(std::string("unknown CPU instruction set '") + name +
                              "'; valid choices: scalar, avx2, avx512");
}

Isa initial_isa() {
  const char* env = std::getenv("GOLDEN_KERNELS_CPU_ISA");
  return env != nullptr && *env != '\0' ? parse_isa(env) : widest_supported();
}

std::atomic<int> chosen{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("x86-64-v3");
    case Isa::avx512:
      return avx512_emulated() ? __builtin_cpu_supports("x86-64-v3") : __builtin_cpu_supports("x86-64-v4");
  }
  return false;
}

bool avx512_emulated() {
#if defined(GOLDEN_EMULATE_AVX512)
  return true;
#else
  return false;
#endif
}

Isa active_isa() {
  int isa = chosen.load();
  if (isa < 0) {
    isa = static_cast<int>(initial_isa());
    chosen.store(isa);
  }
  return static_cast<Isa>(isa);
}

void set_isa(const char* name) { chosen.store(static_cast<int>(parse_isa(name))); }

}  // namespace golden::cpu
