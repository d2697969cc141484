/* Two firmwares that differ only in the model: built with -DMG_USE_MODEL=1 it samples a text
   through the embedding API (what a device would call), with 0 it does nothing. Linked bare
   (no semihosting, no printf), the difference of their sizes is the flash and static RAM the
   model costs, with the C library routines it pulls in (expf, sqrtf, ...). */
#include <stdint.h>

#include "model.h"

#if MG_USE_MODEL
static mg_model model;
volatile int mg_sink; /* where the sampled characters go */
#endif

int main(int argc, char **argv)
{
#if MG_USE_MODEL
    int n, t, len;
    (void)argv;
    mg_init(&model, (uint32_t)argc);
    mg_start(&model, 0, 0);
    for (n = 0; n < MG_BLOCK_SIZE && (t = mg_next(&model, (mg_real)0.5, 0)) != MG_BOS; n++) {
        mg_sink = *mg_token_text(t, &len);
    }
#else
    (void)argc;
    (void)argv;
#endif
    return 0;
}
