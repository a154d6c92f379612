/* LD_PRELOAD shim for benches/load.sh's TLS handshake workload: makes an OpenSSL client
 * (wrk) start every connection with a full handshake. wrk keeps one SSL object per
 * connection slot and calls SSL_clear between connections, which keeps the last session,
 * so every reconnection after the first resumes it. Here SSL_connect drops that session
 * before a handshake begins (SSL_in_before), and leaves handshakes in progress alone.
 * Build: cc -O2 -shared -fPIC -o noresume.so benches/noresume.c -ldl
 * Usage: LD_PRELOAD=./noresume.so wrk ... https://... */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_in_before(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_connect(SSL *s) {
  static int (*real)(SSL *);
  if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
  if (SSL_in_before(s)) SSL_set_session(s, NULL);
  return real(s);
}
