#include <cblas.h>

/* Debian's cblas.h alternative may point at a reference CBLAS header that lacks the
   OpenBLAS extensions; a repeated compatible declaration is harmless when it does not. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
