// Debian's libstb compiles the implementation once; this header only declares it.
#include <stb/stb_image.h>
