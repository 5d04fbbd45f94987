// The one extension module, golden_kernels._C: runtime queries and settings,
// then each op's bindings (registered by the op's own binding file).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "../cpu/isa.h"
#include "../cpu/pages.h"
#include "../cpu/parallel.h"
#include "backend.h"
#if defined(GOLDEN_GPU_EMULATION)
#include "../emulation/self_check.h"
#endif

namespace golden::bindings {
void register_attention(py::module_& m);
void register_convert(py::module_& m);
void register_linear(py::module_& m);
void register_logprob(py::module_& m);
void register_rms_norm(py::module_& m);
void register_embedding(py::module_& m);
void register_swiglu(py::module_& m);
void register_rope(py::module_& m);
}  // namespace golden::bindings

namespace {

const char* thread_pool_name(golden::cpu::ThreadPoolChoice choice) {
  switch (choice) {
    case golden::cpu::ThreadPoolChoice::golden:
      return "golden";
    case golden::cpu::ThreadPoolChoice::openmp:
      return "openmp";
    case golden::cpu::ThreadPoolChoice::automatic:
      break;
  }
  return "auto";
}

golden::cpu::ThreadPoolChoice parse_thread_pool(const std::string& name) {
  using golden::cpu::ThreadPoolChoice;
  for (ThreadPoolChoice choice : {ThreadPoolChoice::automatic, ThreadPoolChoice::golden, ThreadPoolChoice::openmp}) {
    if (name == thread_pool_name(choice)) return choice;
  }
  throw std::invalid_argument("unknown thread pool '" + name + "'; valid choices: auto, golden, openmp");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  using namespace golden;
  m.doc() = "golden_kernels native extension: batch-invariant, device-invariant kernels";

  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("compiled_backends", &bindings::compiled_backends);
#if defined(GOLDEN_GPU_EMULATION)
  m.def("_gpu_emulation_self_check", &gpu_emulation::run_self_check, py::arg("name"),
        "Runs one of the GPU emulation's checks of itself (csrc/emulation/self_check.h).");
#endif
  m.def("available_backends", &bindings::available_backends);
  m.def("cpu_isa", [] { return cpu::isa_name(cpu::active_isa()); },
        "The instruction set the 'cpu' backend runs (scalar, avx2 or avx512).");
  m.def("set_cpu_isa", [](const std::string& name) { cpu::set_isa(name.c_str()); }, py::arg("name"));
  m.def("cpu_isa_supported",
        [](const std::string& name) {
          for (cpu::Isa isa : {cpu::Isa::scalar, cpu::Isa::avx2, cpu::Isa::avx512}) {
            if (name == cpu::isa_name(isa)) return cpu::isa_supported(isa);
          }
          throw std::invalid_argument("unknown CPU instruction set '" + name + "'; valid choices: scalar, avx2, avx512");
        },
        py::arg("name"));
  m.def("cpu_avx512_emulated", &cpu::avx512_emulated,
        "True in a testing build whose avx512 kernels are AVX2 code with 16-lane vectors (GOLDEN_EMULATE_AVX512).");
  m.def("num_threads", &cpu::num_threads);
  m.def("set_num_threads",
        [](int n) {
          if (n < 0) throw std::invalid_argument("num_threads must be >= 0 (0 restores the default)");
          cpu::set_num_threads(n);
        },
        py::arg("n"));
  m.def("thread_pool", [] { return thread_pool_name(cpu::active_thread_pool()); });
  m.def("set_thread_pool", [](const std::string& name) { cpu::set_thread_pool(parse_thread_pool(name)); },
        py::arg("name"));
  m.def("huge_page_advice", &cpu::huge_page_advice_enabled);
  m.def("set_huge_page_advice", &cpu::set_huge_page_advice, py::arg("enabled"));
  m.attr("HUGE_PAGE_ADVICE_MIN_BYTES") = cpu::kHugePageAdviceMinBytes;
  m.def("advise_huge_pages",
        [](std::uintptr_t address, std::size_t bytes) {
          return cpu::advise_huge_pages(reinterpret_cast<void*>(address), bytes);
        },
        py::arg("address"), py::arg("bytes"),
        "When enabled and the buffer is large, advises transparent huge pages for its whole "
        "2 MiB pages; returns whether the kernel took the advice.");

  bindings::register_attention(m);
  bindings::register_convert(m);
  bindings::register_linear(m);
  bindings::register_logprob(m);
  bindings::register_rms_norm(m);
  bindings::register_embedding(m);
  bindings::register_swiglu(m);
  bindings::register_rope(m);
}
