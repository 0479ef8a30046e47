// Run-time CPU dispatch: the instruction set is read once from cpuid and every kernel
// family picks its implementation from it. set_isa() caps the choice (the Python package
// applies ENGINE_ISA=avx512|avx2|portable at import; tests run every path on one machine).
#pragma once

namespace engine {

enum class Isa : int { Portable = 0, Avx2 = 1, Avx512 = 2 };

Isa cpu_isa();                  // the ISA kernels use (detected, capped by set_isa)
Isa detected_isa();             // what the CPU supports
const char* isa_name(Isa isa);
void set_isa(Isa isa);          // for tests: force a lower ISA (clamped to what the CPU has)

// Extensions beyond a tier, checked by the kernels that use them (only ever within the Avx512
// tier: a capped ISA hides them too).
bool cpu_has_avx512_vnni();     // vpdpbusd: u8 x s8 dot products into int32
bool cpu_has_avx512_bf16();

}  // namespace engine
