// The kernel ABI structs as cxx generates them from custom-ops/src/kernel_abi.rs (build.rs puts
// the generated headers on the include path; the standalone harness build does the same).
#pragma once

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
