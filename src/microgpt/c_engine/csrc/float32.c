/* The microgpt core and its binding in float (MG_FLOAT32): the _core32 extension.
 * (The binding first: Python.h comes before any standard header.) */
#define MG_FLOAT32
#include "module.c"
#include "microgpt.c"
