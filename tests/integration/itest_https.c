/* HTTPS against the real daemon (docs/api.md "HTTPS"): `citybrain run` with
 * http.tls_cert and http.tls_key made by openssl at test time, asked by
 * curl with --cacert over HTTP/2 and HTTP/1.1; SIGHUP after the files are
 * replaced by a pair from another CA serves the new certificate without a
 * restart, and a broken pair leaves the running one. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_https(void);

/* curl with the CA file `ca` (in the test dir) on path: returns curl's exit
 * status, with "HTTP_VERSION STATUS" (curl's -w) in *out. */
static int curl_https(int port, const char *ca, const char *flag, const char *path,
                      const char **out)
{
    const char *res = cb_h_pathf("curl.out");
    int rc = cb_h_sh("curl -sS %s --cacert '%s/%s' -o /dev/null -w '%%{http_version} "
                     "%%{http_code}' 'https://127.0.0.1:%d%s' > '%s' 2>> '%s/curl.err'",
                     flag, cb_h_dir(), ca, port, path, res, cb_h_dir());
    size_t len;
    *out = cb_h_read_file(res, &len);
    if (!*out)
        *out = "";
    return rc;
}

/* A server certificate for 127.0.0.1 signed by other.crt, into srv2.*. */
static int make_second_pair(void)
{
    return cb_h_sh("cd '%s' && "
                   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                   "-keyout srv2.key -out srv2.csr -subj /CN=127.0.0.1 && "
                   "openssl x509 -req -in srv2.csr -CA other.crt -CAkey other.key "
                   "-CAcreateserial -out srv2.crt -days 1 -extfile san.ext",
                   cb_h_dir());
}

static void test_https_and_reload(void)
{
    CU_ASSERT_EQUAL_FATAL(cb_h_make_test_certs(), 0);
    CU_ASSERT_EQUAL_FATAL(make_second_pair(), 0);
    /* The daemon reads these two paths; the test swaps what is in them. */
    const char *crt = cb_h_pathf("api.crt"), *key = cb_h_pathf("api.key");
    CU_ASSERT_EQUAL_FATAL(cb_h_sh("cp '%s/srv.crt' '%s' && cp '%s/srv.key' '%s'", cb_h_dir(), crt,
                                  cb_h_dir(), key),
                          0);
    const char *rules = cb_h_pathf("r.rules");
    static const char RULES[] = "rule river_high {\n  match \"city/{district}/river/{sensor}\"\n"
                                "  when level > 4.5\n}\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, RULES, sizeof RULES - 1), 0);
    struct cbd_rig r;
    const char *extra[] = {"--db", cb_h_pathf("https.db"), "--rules", rules, "--set",
                           cb_h_strf("http.tls_cert=%s", crt), "--set",
                           cb_h_strf("http.tls_key=%s", key), NULL};
    cbd_rig_init(&r, "cb-itest-https", "https-token", extra);
    struct cb_h_proc *cb = cbd_rig_start(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT(cbd_wait_log(cb, "HTTPS: HTTP/2 and HTTP/1.1", CBD_TIMEOUT_MS));

    const char *out;
    CU_ASSERT_EQUAL(curl_https(r.port, "ca.crt", "--http2", "/api/health", &out), 0);
    CU_ASSERT_STRING_EQUAL(out, "2 200");
    CU_ASSERT_EQUAL(curl_https(r.port, "ca.crt", "--http1.1", "/api/sensors", &out), 0);
    CU_ASSERT_STRING_EQUAL(out, "1.1 200");
    /* plain HTTP on the TLS port is not answered as HTTP */
    const char *resp;
    CU_ASSERT_NOT_EQUAL(cbd_http(r.port, "GET", "/api/health", NULL, NULL, &resp), 200);
    /* another CA's trust is refused (curl: 60, peer certificate) */
    CU_ASSERT_NOT_EQUAL(curl_https(r.port, "other.crt", "--http2", "/api/health", &out), 0);

    /* A broken pair (a key that is not the certificate's): the old one stays. */
    CU_ASSERT_EQUAL(cb_h_sh("cp '%s/srv2.key' '%s'", cb_h_dir(), key), 0);
    CU_ASSERT_EQUAL(cb_h_proc_signal(cb, SIGHUP), 0);
    CU_ASSERT(cbd_wait_log(cb, "HTTPS certificate not reloaded, the previous one stays",
                           CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(curl_https(r.port, "ca.crt", "--http2", "/api/health", &out), 0);
    CU_ASSERT_STRING_EQUAL(out, "2 200");

    /* The new pair: SIGHUP serves it, no restart (same process). */
    CU_ASSERT_EQUAL(cb_h_sh("cp '%s/srv2.crt' '%s'", cb_h_dir(), crt), 0);
    CU_ASSERT_EQUAL(cb_h_proc_signal(cb, SIGHUP), 0);
    CU_ASSERT(cbd_wait_log(cb, "HTTPS certificate reloaded (SIGHUP)", CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(curl_https(r.port, "other.crt", "--http2", "/api/health", &out), 0);
    CU_ASSERT_STRING_EQUAL(out, "2 200");
    CU_ASSERT_NOT_EQUAL(curl_https(r.port, "ca.crt", "--http2", "/api/health", &out), 0);
    CU_ASSERT(cb_h_proc_running(cb));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* A certificate without its key, or a file that is not PEM, stops run. */
static void test_bad_tls_config(void)
{
    CU_ASSERT_EQUAL_FATAL(cb_h_make_test_certs(), 0);
    const char *junk = cb_h_pathf("junk.pem");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(junk, "not a certificate\n", 18), 0);
    static const char *const cases[][3] = {
        {"srv.crt", "", "HTTPS needs both http.tls_cert and http.tls_key"},
        {"junk.pem", "srv.key", "http.tls_cert '"},
        {"srv.crt", "other.key", "key values mismatch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *cert = cb_h_pathf("%s", cases[i][0]);
        const char *key = *cases[i][1] ? cb_h_pathf("%s", cases[i][1]) : "";
        const char *args[] = {"run", "--check-config", "--rules", cb_h_pathf("none.rules"),
                              "--set", "rules.allow_none=true", "--http", "127.0.0.1:0",
                              "--set", cb_h_strf("http.tls_cert=%s", cert), "--set",
                              cb_h_strf("http.tls_key=%s", key), NULL};
        cbd_refused(args, cases[i][2]);
    }
}

void cb_test_suite_https(void)
{
    CU_pSuite s = cb_h_add_suite("https");
    CU_add_test(s, "https: the API answers curl --cacert over HTTP/2 and HTTP/1.1; SIGHUP serves "
                   "a replaced certificate without a restart, a broken pair keeps the old one",
                test_https_and_reload);
    CU_add_test(s, "https: a certificate without its key, not PEM, or with another key stops run",
                test_bad_tls_config);
}
