/* snapstart's OpenSSL RAND engine for Node.js runtimes.
 *
 * Every RAND_bytes/RAND_priv_bytes call in the Node process (crypto.randomBytes,
 * randomFill*, getRandomValues, randomUUID/randomInt refills, key generation, TLS)
 * is answered with getrandom(2) instead of OpenSSL's DRBG. The DRBG keeps its state
 * in process memory, so every clone restored from one CRIU snapshot would produce
 * the same "random" bytes; the kernel CRNG is reseeded by the manager before each
 * restore, so reading it per call is fresh in every clone. There is no state here.
 *
 * Loaded by Node at startup through an OpenSSL config (bootstrap/node/openssl.cnf,
 * --openssl-config), before anything asks OpenSSL for randomness: OpenSSL caches
 * its default RAND method on first use. Built by `make node-ric`.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/engine.h>
#include <openssl/rand.h>

static const char engine_id[] = "snapstart-getrandom";
static const char engine_name[] = "snapstart: RAND from getrandom(2) (snapshot-safe)";

static int sr_bytes(unsigned char *buf, int num)
{
    size_t off = 0;
    if (num < 0)
        return 0;
    while (off < (size_t)num) {
        ssize_t n = getrandom(buf + off, (size_t)num - off, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        off += (size_t)n;
    }
    return 1;
}

static int sr_seed(const void *buf, int num) { (void)buf; (void)num; return 1; }
static int sr_add(const void *buf, int num, double entropy)
{
    (void)buf; (void)num; (void)entropy;
    return 1;
}
static int sr_status(void) { return 1; }

static RAND_METHOD sr_method = {
    sr_seed, sr_bytes, NULL, sr_add, sr_bytes, sr_status,
};

static int sr_bind(ENGINE *e, const char *id)
{
    if (id != NULL && strcmp(id, engine_id) != 0)
        return 0;
    return ENGINE_set_id(e, engine_id) && ENGINE_set_name(e, engine_name)
           && ENGINE_set_RAND(e, &sr_method);
}

IMPLEMENT_DYNAMIC_BIND_FN(sr_bind)
IMPLEMENT_DYNAMIC_CHECK_FN()
