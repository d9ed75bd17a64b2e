#include <oneapi/dnnl/dnnl.h>

// oneDNN's CPU runtime here is OpenMP; its thread count is a per-calling-thread setting that
// oneDNN itself does not expose, so the libgomp entry points are declared here.
extern void omp_set_num_threads(int num_threads);
extern int omp_get_max_threads(void);
