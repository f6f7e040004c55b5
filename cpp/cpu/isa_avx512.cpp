// The CPU kernels built for avx512 (16 floats per vector); compile flags in build.rs.
#define MAMBAC_ISA avx512
#define MAMBAC_VW 16
#include "kernels_impl.h"
#include "add_rms_norm_impl.h"
#include "gated_rms_norm_impl.h"
