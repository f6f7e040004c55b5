// The CPU kernels built for avx2 (8 floats per vector); compile flags in build.rs.
#define MAMBAC_ISA avx2
#define MAMBAC_VW 8
#include "kernels_impl.h"
#include "add_rms_norm_impl.h"
#include "gated_rms_norm_impl.h"
