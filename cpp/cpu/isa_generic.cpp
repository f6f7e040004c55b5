// The CPU kernels built for generic (4 floats per vector); compile flags in build.rs.
#define MAMBAC_ISA generic
#define MAMBAC_VW 4
#include "kernels_impl.h"
#include "add_rms_norm_impl.h"
#include "gated_rms_norm_impl.h"
