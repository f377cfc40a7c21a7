// CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78).
#include "CShims.h"
#include <string.h>

static uint32_t sw_crc_table[8][256];
// Set once by the constructor, before any thread exists; read-only afterwards.
static int sw_crc_use_hw = 0;
int sw_crc32c_has_hw(void);

// Why a constructor: the table and the hardware choice are settled once, before any thread
// can race on them.
__attribute__((constructor)) static void sw_crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        sw_crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = sw_crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = sw_crc_table[0][c & 0xff] ^ (c >> 8);
            sw_crc_table[t][n] = c;
        }
    }
#if defined(__x86_64__)
    __builtin_cpu_init(); // required before __builtin_cpu_supports in a constructor
#endif
    sw_crc_use_hw = sw_crc32c_has_hw();
}

uint32_t sw_crc32c_sw(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) { c = sw_crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8); len--; }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = sw_crc_table[7][w & 0xff] ^ sw_crc_table[6][(w >> 8) & 0xff] ^
            sw_crc_table[5][(w >> 16) & 0xff] ^ sw_crc_table[4][(w >> 24) & 0xff] ^
            sw_crc_table[3][(w >> 32) & 0xff] ^ sw_crc_table[2][(w >> 40) & 0xff] ^
            sw_crc_table[1][(w >> 48) & 0xff] ^ sw_crc_table[0][w >> 56];
        p += 8; len -= 8;
    }
    while (len--) c = sw_crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
uint32_t sw_crc32c_hw(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = (uint32_t)~crc;
    while (len && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); len--; }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8; len -= 8;
    }
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
int sw_crc32c_has_hw(void) { return __builtin_cpu_supports("sse4.2") ? 1 : 0; }
#else
uint32_t sw_crc32c_hw(uint32_t crc, const void *data, size_t len) { return sw_crc32c_sw(crc, data, len); }
int sw_crc32c_has_hw(void) { return 0; }
#endif

uint32_t sw_crc32c(uint32_t crc, const void *data, size_t len) {
    return sw_crc_use_hw ? sw_crc32c_hw(crc, data, len) : sw_crc32c_sw(crc, data, len);
}
