/* The integration-test harness (see harness.h for the contract).
 *
 * Every object is on one of the harness's lists from the moment it exists, so
 * cb_h_teardown() can release it whatever state the test left it in.
 * Children are started with fork+exec (only async-signal-safe calls between
 * the two) and PR_SET_PDEATHSIG, so even a crashed test binary leaves no
 * mosquitto or citybrain behind. */
#include "tests/support/harness.h"

#include <MQTTClient.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct cb_h_proc {
    struct cb_h_proc *next;
    pid_t pid;
    int exited;
    int status; /* raw waitpid status */
    char *name;
    char *stdout_path;
    char *stderr_path;
};

struct cb_h_broker {
    struct cb_h_broker *next;
    struct cb_h_proc *proc;
    int port;
    int seq;
    char *conf_path;
    char *url;
    int also[4];
    int nalso;
};

struct cb_h_pub {
    struct cb_h_pub *next;
    MQTTClient c;
    int connected;
    int version;
    /* deliveryComplete hands the token over; MQTTClient_waitForCompletion
     * would poll in 100 ms steps. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    MQTTClient_deliveryToken done_tok;
    int lost;
};

struct msg_node {
    struct cb_h_msg m;
};

struct cb_h_sub {
    struct cb_h_sub *next;
    MQTTClient c;
    int connected;
    pthread_mutex_t lock;
    struct msg_node **msgs;
    size_t n, cap;
};

static struct {
    char *dir;
    void **allocs;
    size_t nallocs, cap;
    struct cb_h_proc *procs;
    struct cb_h_broker *brokers;
    struct cb_h_pub *pubs;
    struct cb_h_sub *subs;
    int atexit_set;
    unsigned seq;
    int verbose;
    char *mounts[4]; /* tmpfs mount points, unmounted at teardown */
    size_t nmounts;
} H;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (!H.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[harness] ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Keeps p until teardown; aborts on OOM (a test cannot go on without memory). */
static void *own(void *p)
{
    if (!p) {
        fprintf(stderr, "harness: out of memory\n");
        abort();
    }
    if (H.nallocs == H.cap) {
        size_t nc = H.cap ? H.cap * 2 : 32;
        void **na = realloc(H.allocs, nc * sizeof *na);
        if (!na) {
            fprintf(stderr, "harness: out of memory\n");
            abort();
        }
        H.allocs = na;
        H.cap = nc;
    }
    H.allocs[H.nallocs++] = p;
    return p;
}

static char *vstrf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

const char *cb_h_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vstrf(fmt, ap);
    va_end(ap);
    return own(s);
}

int64_t cb_h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- per test ------------------------------------------------------------ */

static void atexit_teardown(void) { cb_h_teardown(); }

void cb_h_setup(void)
{
    H.verbose = getenv("CB_H_VERBOSE") && strcmp(getenv("CB_H_VERBOSE"), "1") == 0;
    if (!H.atexit_set) {
        atexit(atexit_teardown);
        signal(SIGPIPE, SIG_IGN);
        H.atexit_set = 1;
    }
    if (H.dir)
        return;
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char *tmpl = NULL;
    if (asprintf(&tmpl, "%s/cbtest-XXXXXX", base) < 0)
        abort();
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", tmpl, strerror(errno));
        abort();
    }
    H.dir = tmpl;
    note("temp dir %s", H.dir);
}

CU_pSuite cb_h_add_suite(const char *name)
{
    return CU_add_suite_with_setup_and_teardown(name, NULL, NULL, cb_h_setup, cb_h_teardown);
}

const char *cb_h_dir(void)
{
    if (!H.dir)
        cb_h_setup();
    return H.dir;
}

const char *cb_h_pathf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *name = vstrf(fmt, ap);
    va_end(ap);
    if (!name)
        abort();
    const char *r = cb_h_strf("%s/%s", cb_h_dir(), name);
    free(name);
    return r;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void sub_free(struct cb_h_sub *s)
{
    if (s->connected)
        MQTTClient_disconnect(s->c, 200);
    MQTTClient_destroy(&s->c);
    for (size_t i = 0; i < s->n; i++) {
        free((char *)s->msgs[i]->m.topic);
        free((char *)s->msgs[i]->m.payload);
        free(s->msgs[i]);
    }
    free(s->msgs);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void pub_free(struct cb_h_pub *p)
{
    if (p->connected && p->version == 5)
        MQTTClient_disconnect5(p->c, 200, MQTTREASONCODE_NORMAL_DISCONNECTION, NULL);
    else if (p->connected)
        MQTTClient_disconnect(p->c, 200);
    MQTTClient_destroy(&p->c);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

void cb_h_teardown(void)
{
    while (H.subs) {
        struct cb_h_sub *s = H.subs;
        H.subs = s->next;
        sub_free(s);
    }
    while (H.pubs) {
        struct cb_h_pub *p = H.pubs;
        H.pubs = p->next;
        pub_free(p);
    }
    /* citybrain first (it may still talk to the broker), brokers last: the
     * process list is newest first, which gives that order. */
    while (H.procs) {
        struct cb_h_proc *p = H.procs;
        H.procs = p->next;
        if (!p->exited) {
            note("killing %s (pid %d)", p->name, (int)p->pid);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
        }
        free(p->name);
        free(p->stdout_path);
        free(p->stderr_path);
        free(p);
    }
    while (H.brokers) {
        struct cb_h_broker *b = H.brokers;
        H.brokers = b->next;
        free(b->conf_path);
        free(b->url);
        free(b);
    }
    while (H.nmounts) {
        char *m = H.mounts[--H.nmounts];
        if (umount2(m, MNT_DETACH) != 0)
            fprintf(stderr, "harness: cannot unmount %s: %s\n", m, strerror(errno));
        free(m);
    }
    for (size_t i = 0; i < H.nallocs; i++)
        free(H.allocs[i]);
    free(H.allocs);
    H.allocs = NULL;
    H.nallocs = H.cap = 0;
    if (H.dir) {
        const char *keep = getenv("CB_KEEP_TMP");
        if (keep && strcmp(keep, "1") == 0)
            fprintf(stderr, "harness: kept %s\n", H.dir);
        else
            nftw(H.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(H.dir);
        H.dir = NULL;
    }
}

int cb_h_tmpfs(const char *path, const char *size)
{
    if (H.nmounts == sizeof H.mounts / sizeof H.mounts[0]) {
        errno = ENOSPC;
        return -1;
    }
    char *copy = strdup(path);
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
    if (!copy || (mkdir(path, 0755) != 0 && errno != EEXIST) ||
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
        int e = errno;
        free(copy);
        errno = e;
        return -1;
    }
    note("mounted a %s tmpfs at %s", size, path);
    H.mounts[H.nmounts++] = copy;
    return 0;
}

int cb_h_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

const char *cb_h_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                abort();
            buf = nb;
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return own(buf);
}

int cb_h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int cb_h_wait_port(int port, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        if (port_accepts(port))
            return 0;
        if (mono_ms() >= end)
            return -1;
        sleep_ms(10);
    }
}

int cb_h_wait_until(int (*pred)(void *ctx), void *ctx, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        if (pred(ctx))
            return 1;
        if (mono_ms() >= end)
            return pred(ctx) ? 1 : 0;
        sleep_ms(10);
    }
}

int cb_h_sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = vstrf(fmt, ap);
    va_end(ap);
    if (!cmd)
        return -1;
    char *full = NULL;
    if (asprintf(&full, "( %s ) >>'%s/sh.log' 2>&1", cmd, cb_h_dir()) < 0) {
        free(cmd);
        return -1;
    }
    note("sh: %s", cmd);
    int st = system(full);
    free(full);
    free(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

int cb_h_make_test_certs(void)
{
    return cb_h_sh(
        "cd '%s' && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.crt -days 1 -subj /CN=cbtest-ca && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout srv.key -out srv.csr -subj /CN=127.0.0.1 && "
        "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
        "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out srv.crt -days 1 -extfile san.ext && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout other.key -out other.crt -days 1 -subj /CN=other-ca",
        cb_h_dir()) == 0 ? 0 : -1;
}

const char *cb_h_tls_listener_conf(int port)
{
    const char *d = cb_h_dir();
    return cb_h_strf("listener %d 127.0.0.1\ncafile %s/ca.crt\ncertfile %s/srv.crt\n"
                     "keyfile %s/srv.key\n",
                     port, d, d, d);
}

/* ---- processes ------------------------------------------------------------ */

/* The environment for a child: environ with the entries of extra replacing
 * those with the same key. The array is freed by the caller; strings are
 * borrowed. */
static char **build_env(const char *const *extra)
{
    size_t n = 0, ne = 0;
    while (environ[n])
        n++;
    if (extra)
        while (extra[ne])
            ne++;
    char **env = calloc(n + ne + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < ne; j++)
            if (strncmp(extra[j], environ[i], kl) == 0 && extra[j][kl] == '=')
                overridden = 1;
        if (!overridden)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < ne; j++)
        env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

struct cb_h_proc *cb_h_spawn(const char *name, const char *path, const char *const *argv,
                             const char *const *env)
{
    struct cb_h_proc *p = calloc(1, sizeof *p);
    char **envp = NULL;
    if (!p)
        return NULL;
    p->name = strdup(name);
    if (asprintf(&p->stdout_path, "%s/%s.stdout", cb_h_dir(), name) < 0)
        p->stdout_path = NULL;
    if (asprintf(&p->stderr_path, "%s/%s.stderr", cb_h_dir(), name) < 0)
        p->stderr_path = NULL;
    envp = build_env(env);
    if (!p->name || !p->stdout_path || !p->stderr_path || !envp)
        goto fail;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0) {
        /* Child: async-signal-safe calls only until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY);
        int out = open(p->stdout_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int err = open(p->stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0 || err < 0)
            _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execve(path, (char *const *)argv, envp);
        _exit(127);
    }
    free(envp);
    p->pid = pid;
    p->next = H.procs;
    H.procs = p;
    note("spawned %s pid %d: %s", name, (int)pid, path);
    return p;
fail:
    free(envp);
    free(p->name);
    free(p->stdout_path);
    free(p->stderr_path);
    free(p);
    return NULL;
}

struct cb_h_proc *cb_h_citybrain(const char *const *args, const char *const *env)
{
    const char *bin = getenv("CB_BIN");
    if (!bin || !*bin)
        bin = "build/asan/citybrain";
    size_t n = 0;
    while (args && args[n])
        n++;
    const char **argv = calloc(n + 2, sizeof *argv);
    if (!argv)
        return NULL;
    argv[0] = bin;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = args[i];
    argv[n + 1] = NULL;
    struct cb_h_proc *p = cb_h_spawn(cb_h_strf("citybrain-%u", ++H.seq), bin, argv, env);
    free(argv);
    return p;
}

pid_t cb_h_proc_pid(const struct cb_h_proc *p) { return p->pid; }

int cb_h_proc_signal(struct cb_h_proc *p, int sig)
{
    if (!p || p->exited)
        return -1;
    return kill(p->pid, sig);
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

static int reap(struct cb_h_proc *p)
{
    if (p->exited)
        return 1;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->exited = 1;
        p->status = st;
        note("%s (pid %d) exited: %d", p->name, (int)p->pid, decode_status(st));
        return 1;
    }
    return 0;
}

int cb_h_proc_wait(struct cb_h_proc *p, int timeout_ms)
{
    if (!p)
        return -1;
    int64_t end = mono_ms() + timeout_ms;
    while (!reap(p)) {
        if (mono_ms() >= end)
            return -1;
        sleep_ms(10);
    }
    return decode_status(p->status);
}

int cb_h_proc_running(struct cb_h_proc *p) { return p && !reap(p); }

void cb_h_proc_kill(struct cb_h_proc *p)
{
    if (!p || reap(p))
        return;
    kill(p->pid, SIGKILL);
    int st;
    if (waitpid(p->pid, &st, 0) == p->pid) {
        p->exited = 1;
        p->status = st;
    }
}

const char *cb_h_proc_stderr(struct cb_h_proc *p)
{
    const char *s = cb_h_read_file(p->stderr_path, NULL);
    return s ? s : "";
}

const char *cb_h_proc_stderr_path(const struct cb_h_proc *p) { return p->stderr_path; }

const char *cb_h_proc_stdout(struct cb_h_proc *p)
{
    const char *s = cb_h_read_file(p->stdout_path, NULL);
    return s ? s : "";
}

/* ---- broker ----------------------------------------------------------------- */

static int broker_spawn(struct cb_h_broker *b)
{
    const char *argv[] = {"/usr/sbin/mosquitto", "-c", b->conf_path, NULL};
    b->proc = cb_h_spawn(cb_h_strf("mosquitto-%d", b->seq), argv[0], argv, NULL);
    if (!b->proc)
        return -1;
    int64_t end = mono_ms() + 5000;
    for (;;) {
        if (!cb_h_proc_running(b->proc)) {
            fprintf(stderr, "harness: mosquitto exited: %s\n", cb_h_proc_stderr(b->proc));
            return -1;
        }
        int ready = port_accepts(b->port);
        for (int i = 0; ready && i < b->nalso; i++)
            ready = port_accepts(b->also[i]);
        if (ready)
            return 0;
        if (mono_ms() >= end) {
            fprintf(stderr, "harness: mosquitto not ready on port %d: %s\n", b->port,
                    cb_h_proc_stderr(b->proc));
            return -1;
        }
        sleep_ms(10);
    }
}

struct cb_h_broker *cb_h_broker_start_opts(const char *extra_conf, int anonymous)
{
    struct cb_h_broker *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->next = H.brokers;
    H.brokers = b;
    b->seq = (int)++H.seq;
    b->port = cb_h_free_port();
    if (b->port <= 0)
        return NULL;
    if (asprintf(&b->url, "tcp://127.0.0.1:%d", b->port) < 0) {
        b->url = NULL;
        return NULL;
    }
    const char *pdir = cb_h_pathf("mosquitto-%d.d", b->seq);
    if (mkdir(pdir, 0700) != 0)
        return NULL;
    struct passwd *pw = getpwuid(geteuid());
    const char *conf = cb_h_strf("# generated by tests/support/harness.c\n"
                                 "per_listener_settings false\n"
                                 "listener %d 127.0.0.1\n"
                                 "allow_anonymous %s\n"
                                 "persistence true\n"
                                 "persistence_location %s/\n"
                                 "autosave_interval 0\n"
                                 "%s%s%s"
                                 "log_dest stderr\n"
                                 "log_type error\nlog_type warning\nlog_type notice\n"
                                 "log_type information\n"
                                 "%s\n",
                                 b->port, anonymous ? "true" : "false", pdir,
                                 pw ? "user " : "", pw ? pw->pw_name : "", pw ? "\n" : "",
                                 extra_conf ? extra_conf : "");
    if (asprintf(&b->conf_path, "%s/mosquitto-%d.conf", cb_h_dir(), b->seq) < 0) {
        b->conf_path = NULL;
        return NULL;
    }
    if (cb_h_write_file(b->conf_path, conf, strlen(conf)) != 0)
        return NULL;
    if (broker_spawn(b) != 0)
        return NULL;
    note("broker %s up", b->url);
    return b;
}

struct cb_h_broker *cb_h_broker_start(const char *extra_conf)
{
    return cb_h_broker_start_opts(extra_conf, 1);
}

int cb_h_broker_port(const struct cb_h_broker *b) { return b->port; }
const char *cb_h_broker_url(const struct cb_h_broker *b) { return b->url; }

void cb_h_broker_also_wait(struct cb_h_broker *b, int port)
{
    if (b->nalso < (int)(sizeof b->also / sizeof b->also[0]))
        b->also[b->nalso++] = port;
}

int cb_h_broker_stop(struct cb_h_broker *b)
{
    if (!b || !b->proc || !cb_h_proc_running(b->proc))
        return 0;
    cb_h_proc_signal(b->proc, SIGTERM);
    if (cb_h_proc_wait(b->proc, 5000) < 0) {
        cb_h_proc_kill(b->proc);
        return -1;
    }
    return 0;
}

int cb_h_broker_signal(struct cb_h_broker *b, int sig)
{
    if (!b || !b->proc || !cb_h_proc_running(b->proc))
        return -1;
    if (sig == SIGKILL) {
        cb_h_proc_kill(b->proc);
        return 0;
    }
    return cb_h_proc_signal(b->proc, sig);
}

int cb_h_broker_restart(struct cb_h_broker *b)
{
    if (cb_h_broker_stop(b) != 0)
        return -1;
    /* The port was just released; mosquitto sets SO_REUSEADDR, so rebinding
     * it right away works even with connections in TIME_WAIT. */
    return broker_spawn(b);
}

/* ---- MQTT clients ---------------------------------------------------------------- */

static int mqtt_connect(MQTTClient *c, const char *url, const struct cb_h_mqtt_opts *o,
                        const char *role, int *version)
{
    const char *id = o && o->client_id ? o->client_id
                                       : cb_h_strf("h-%s-%d-%u", role, (int)getpid(), ++H.seq);
    int v5 = o && o->mqtt_version == 5;
    *version = v5 ? 5 : 4;
    MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
    co.MQTTVersion = v5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
    int rc = MQTTClient_createWithOptions(c, url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTCLIENT_SUCCESS)
        return rc;
    return 0;
}

static int mqtt_do_connect(MQTTClient c, const struct cb_h_mqtt_opts *o, int version)
{
    MQTTClient_connectOptions cop = MQTTClient_connectOptions_initializer;
    MQTTClient_connectOptions cop5 = MQTTClient_connectOptions_initializer5;
    MQTTClient_connectOptions *opt = version == 5 ? &cop5 : &cop;
    MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
    opt->keepAliveInterval = o && o->keepalive_s ? o->keepalive_s : 10;
    if (version == 5)
        opt->cleanstart = !(o && o->persistent);
    else
        opt->cleansession = !(o && o->persistent);
    opt->connectTimeout = 5;
    if (o && o->username)
        opt->username = o->username;
    if (o && o->password)
        opt->password = o->password;
    if (o && o->ca_file) {
        ssl.trustStore = o->ca_file;
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1;
        opt->ssl = &ssl;
    }
    if (version == 5) {
        MQTTResponse r = MQTTClient_connect5(c, opt, NULL, NULL);
        int rc = r.reasonCode;
        MQTTResponse_free(r);
        return rc;
    }
    return MQTTClient_connect(c, opt);
}

static int pub_arrived(void *ctx, char *topic, int topic_len, MQTTClient_message *m)
{
    (void)ctx;
    (void)topic_len;
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1;
}

static void pub_delivered(void *ctx, MQTTClient_deliveryToken tok)
{
    struct cb_h_pub *p = ctx;
    pthread_mutex_lock(&p->lock);
    p->done_tok = tok;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void pub_lost(void *ctx, char *cause)
{
    struct cb_h_pub *p = ctx;
    (void)cause;
    pthread_mutex_lock(&p->lock);
    p->lost = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

struct cb_h_pub *cb_h_pub_connect(const char *url, const struct cb_h_mqtt_opts *opts)
{
    struct cb_h_pub *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (mqtt_connect(&p->c, url, opts, "pub", &p->version) != 0) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        free(p);
        return NULL;
    }
    p->next = H.pubs;
    H.pubs = p;
    if (MQTTClient_setCallbacks(p->c, p, pub_lost, pub_arrived, pub_delivered) !=
        MQTTCLIENT_SUCCESS)
        return NULL;
    int rc = mqtt_do_connect(p->c, opts, p->version);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "harness: publisher connect to %s failed: %d\n", url, rc);
        return NULL;
    }
    p->connected = 1;
    return p;
}

int cb_h_pub_send(struct cb_h_pub *p, const char *topic, const void *payload, size_t len,
                  int qos, int retained)
{
    if (!p)
        return -1;
    MQTTClient_deliveryToken tok = 0;
    int rc;
    if (p->version == 5) {
        MQTTResponse r = MQTTClient_publish5(p->c, topic, (int)len, payload, qos, retained,
                                             NULL, &tok);
        rc = r.reasonCode;
        MQTTResponse_free(r);
    } else {
        rc = MQTTClient_publish(p->c, topic, (int)len, payload, qos, retained, &tok);
    }
    if (rc != MQTTCLIENT_SUCCESS)
        return rc;
    if (qos == 0)
        return 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&p->lock);
    while (p->done_tok != tok && !p->lost &&
           pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
        ;
    rc = p->done_tok == tok ? 0 : -1;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int cb_h_pub_str(struct cb_h_pub *p, const char *topic, const char *payload, int qos)
{
    return cb_h_pub_send(p, topic, payload, strlen(payload), qos, 0);
}

void cb_h_pub_disconnect(struct cb_h_pub *p)
{
    if (p && p->connected) {
        if (p->version == 5)
            MQTTClient_disconnect5(p->c, 1000, MQTTREASONCODE_NORMAL_DISCONNECTION, NULL);
        else
            MQTTClient_disconnect(p->c, 1000);
        p->connected = 0;
    }
}

int cb_h_publish(const char *url, const char *topic, const void *payload, size_t len, int qos)
{
    struct cb_h_pub *p = cb_h_pub_connect(url, NULL);
    if (!p)
        return -1;
    int rc = cb_h_pub_send(p, topic, payload, len, qos, 0);
    cb_h_pub_disconnect(p);
    return rc;
}

static int sub_arrived(void *ctx, char *topic, int topic_len, MQTTClient_message *m)
{
    struct cb_h_sub *s = ctx;
    struct msg_node *n = calloc(1, sizeof *n);
    size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    char *t = malloc(tl + 1);
    char *pl = malloc((size_t)m->payloadlen + 1);
    if (!n || !t || !pl) {
        free(n);
        free(t);
        free(pl);
        return 0; /* Paho redelivers */
    }
    memcpy(t, topic, tl);
    t[tl] = '\0';
    memcpy(pl, m->payload, (size_t)m->payloadlen);
    pl[m->payloadlen] = '\0';
    n->m.topic = t;
    n->m.payload = pl;
    n->m.len = (size_t)m->payloadlen;
    n->m.qos = m->qos;
    n->m.retained = m->retained;
    pthread_mutex_lock(&s->lock);
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        struct msg_node **na = realloc(s->msgs, nc * sizeof *na);
        if (!na) {
            pthread_mutex_unlock(&s->lock);
            free(n);
            free(t);
            free(pl);
            return 0;
        }
        s->msgs = na;
        s->cap = nc;
    }
    s->msgs[s->n++] = n;
    pthread_mutex_unlock(&s->lock);
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1;
}

static void sub_lost(void *ctx, char *cause)
{
    (void)ctx;
    (void)cause;
}

struct cb_h_sub *cb_h_sub_start(const char *url, const char *filter, int qos,
                                const struct cb_h_mqtt_opts *opts)
{
    struct cb_h_sub *s = calloc(1, sizeof *s);
    int version;
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    if (mqtt_connect(&s->c, url, opts, "sub", &version) != 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    s->next = H.subs;
    H.subs = s;
    if (MQTTClient_setCallbacks(s->c, s, sub_lost, sub_arrived, NULL) != MQTTCLIENT_SUCCESS)
        return NULL;
    int rc = mqtt_do_connect(s->c, opts, version);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "harness: subscriber connect to %s failed: %d\n", url, rc);
        return NULL;
    }
    s->connected = 1;
    if (version == 5) {
        MQTTResponse r = MQTTClient_subscribe5(s->c, filter, qos, NULL, NULL);
        rc = (int)r.reasonCode == qos ? 0 : (int)r.reasonCode;
        MQTTResponse_free(r);
    } else {
        rc = MQTTClient_subscribe(s->c, filter, qos);
    }
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "harness: subscribe %s failed: %d\n", filter, rc);
        return NULL;
    }
    return s;
}

size_t cb_h_sub_count(struct cb_h_sub *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int cb_h_sub_get(struct cb_h_sub *s, size_t i, struct cb_h_msg *out)
{
    if (!s)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&s->lock);
    if (i < s->n) {
        *out = s->msgs[i]->m;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

struct sub_wait {
    struct cb_h_sub *s;
    size_t n;
};

static int sub_has(void *ctx)
{
    struct sub_wait *w = ctx;
    return cb_h_sub_count(w->s) >= w->n;
}

int cb_h_sub_wait_count(struct cb_h_sub *s, size_t n, int timeout_ms)
{
    struct sub_wait w = {s, n};
    return cb_h_wait_until(sub_has, &w, timeout_ms);
}

void cb_h_sub_stop(struct cb_h_sub *s)
{
    if (s && s->connected) {
        MQTTClient_disconnect(s->c, 1000);
        s->connected = 0;
    }
}

/* ---- SQLite ---------------------------------------------------------------------- */

/* Runs sql on a read-only connection; reads column 0 of row 0 as int or double. */
static int sql_scalar(const char *db_path, const char *sql, int64_t *iout, double *dout)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "harness: sql %s: %s\n", sql, sqlite3_errmsg(db));
        goto out;
    }
    if (sqlite3_step(st) != SQLITE_ROW)
        goto out;
    if (iout)
        *iout = sqlite3_column_int64(st, 0);
    if (dout)
        *dout = sqlite3_column_double(st, 0);
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int cb_h_sql_int(const char *db_path, int64_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vstrf(fmt, ap);
    va_end(ap);
    if (!sql)
        return -1;
    int rc = sql_scalar(db_path, sql, out, NULL);
    free(sql);
    return rc;
}

int cb_h_sql_double(const char *db_path, double *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vstrf(fmt, ap);
    va_end(ap);
    if (!sql)
        return -1;
    int rc = sql_scalar(db_path, sql, NULL, out);
    free(sql);
    return rc;
}

int64_t cb_h_sql_count(const char *db_path, const char *table, const char *where)
{
    int64_t n = -1;
    if (cb_h_sql_int(db_path, &n, "SELECT count(*) FROM %s%s%s", table, where ? " WHERE " : "",
                     where ? where : "") != 0)
        return -1;
    return n;
}

/* LeakSanitizer: Paho's synchronous client (test-only, libpaho-mqtt3cs
 * 1.3.12) keeps its client list after MQTTClient_destroy of an MQTT 5
 * client (519 bytes, allocated in MQTTClient_createWithOptions; every
 * client the harness creates is destroyed at teardown). Only allocations
 * made inside that library are suppressed; citybrain's own code and
 * libpaho-mqtt3as are still checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libpaho-mqtt3cs.so\n"; }
