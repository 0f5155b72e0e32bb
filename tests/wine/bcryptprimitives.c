/* bcryptprimitives.dll for wine 8 (Debian 12), which lacks it: current Rust programs for
 * Windows import ProcessPrng from it for their random numbers. This one exports ProcessPrng
 * on top of RtlGenRandom (advapi32's SystemFunction036), which wine has. For running the
 * Windows build in CI only (scripts/windows-smoke): real Windows has the real DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
