/* A cheap load generator for `python -m bench workers`: compiled at bench time with gcc, so the
 * client costs a small share of one core instead of whole Python cores on a 2-core machine.
 *
 *   loadgen radius HOST PORT SECRET USERS SOCKETS WINDOW SECONDS WARM
 *   loadgen ldap   HOST PORT BASE_DN USERS CONNS   SECONDS WARM
 *
 * USERS: a file of "barcode pin" lines (the bench's patrons). WARM=1: every socket or connection
 * asks for each patron exactly once (so each worker it lands on verifies and caches them), then
 * stops; WARM=0: it asks in a loop over the patrons for SECONDS.
 *
 * RADIUS: PAP Access-Requests on SOCKETS connected UDP sockets, WINDOW in flight on each, sent
 * with sendmmsg and read with recvmmsg; every request gets a fresh identifier and Request
 * Authenticator (so no server answers from its duplicate cache), the User-Password hidden with
 * MD5 as RFC 2865 5.2 says, and a Message-Authenticator (RFC 3579 3.2, HMAC-MD5: the bridge
 * requires it of a client that has sent one). LDAP: one simple bind in flight per connection (RFC 4511 4.2.1: no
 * operation may follow a bind before its response), CONNS connections multiplexed with epoll.
 *
 * Prints one line: answered accepted elapsed_seconds cpu_seconds_of_this_process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_USERS 100000
#define BATCH 64

static char *barcodes[MAX_USERS], *pins[MAX_USERS];
static int users;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void load_users(const char *path) {
    FILE *f = fopen(path, "r");
    char b[128], p[128];
    if (!f) { perror(path); exit(2); }
    while (users < MAX_USERS && fscanf(f, "%127s %127s", b, p) == 2) {
        barcodes[users] = strdup(b);
        pins[users] = strdup(p);
        users++;
    }
    fclose(f);
    if (!users) { fprintf(stderr, "no users\n"); exit(2); }
}

static struct sockaddr_in address(const char *host, const char *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, host, &a.sin_addr);
    return a;
}

/* --- RADIUS ------------------------------------------------------------------------------- */

static const char *secret;
static uint8_t run_id[8];

static int radius_packet(uint8_t *out, int user, uint8_t ident, uint32_t sock, uint32_t seq) {
    uint8_t *auth = out + 4, hidden[16] = {0}, digest[16], md5in[256];
    size_t slen = strlen(secret), blen = strlen(barcodes[user]), plen = strlen(pins[user]);
    int n = 20;
    out[0] = 1; /* Access-Request */
    out[1] = ident;
    memcpy(auth, run_id, 8);
    memcpy(auth + 8, &sock, 4);
    memcpy(auth + 12, &seq, 4);
    out[n++] = 1; /* User-Name */
    out[n++] = 2 + blen;
    memcpy(out + n, barcodes[user], blen);
    n += blen;
    memcpy(hidden, pins[user], plen > 16 ? 16 : plen);
    memcpy(md5in, secret, slen);
    memcpy(md5in + slen, auth, 16);
    MD5(md5in, slen + 16, digest);
    for (int i = 0; i < 16; i++) hidden[i] ^= digest[i];
    out[n++] = 2; /* User-Password */
    out[n++] = 18;
    memcpy(out + n, hidden, 16);
    n += 16;
    int ma = n; /* Message-Authenticator: HMAC-MD5 over the packet with this field zero */
    out[n++] = 80;
    out[n++] = 18;
    memset(out + n, 0, 16);
    n += 16;
    out[2] = n >> 8;
    out[3] = n & 0xff;
    unsigned int maclen = 16;
    HMAC(EVP_md5(), secret, slen, out, n, out + ma + 2, &maclen);
    return n;
}

struct rsock {
    int fd, inflight, next_user;
    uint32_t seq, sent, answered;
    double last;
};

static void radius_send(struct rsock *s, int idx, int count, int limit) {
    static uint8_t bufs[BATCH][128];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    int n = 0;
    while (n < count && n < BATCH && (limit < 0 || (int)s->sent < limit)) {
        int len = radius_packet(bufs[n], s->next_user, s->seq & 0xff, idx, s->seq);
        s->seq++;
        s->sent++;
        s->next_user = (s->next_user + 1) % users;
        iov[n].iov_base = bufs[n];
        iov[n].iov_len = len;
        memset(&msgs[n], 0, sizeof msgs[n]);
        msgs[n].msg_hdr.msg_iov = &iov[n];
        msgs[n].msg_hdr.msg_iovlen = 1;
        n++;
    }
    if (n && sendmmsg(s->fd, msgs, n, 0) > 0) s->inflight += n;
}

static int run_radius(char **argv) {
    struct sockaddr_in to = address(argv[2], argv[3]);
    int nsock = atoi(argv[6]), window = atoi(argv[7]), warm = atoi(argv[9]);
    double seconds = atof(argv[8]);
    secret = argv[4];
    load_users(argv[5]);
    FILE *r = fopen("/dev/urandom", "r");
    if (!r || fread(run_id, 1, 8, r) != 8) return 2;
    fclose(r);
    int ep = epoll_create1(0);
    struct rsock *socks = calloc(nsock, sizeof *socks);
    int limit = warm ? users : -1;
    double start = now(), cpu0 = cpu(), end = start + (warm ? 300 : seconds);
    for (int i = 0; i < nsock; i++) {
        socks[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        socks[i].next_user = (i * 131) % users;
        if (connect(socks[i].fd, (struct sockaddr *)&to, sizeof to)) { perror("connect"); return 2; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i].fd, &ev);
        radius_send(&socks[i], i, window, limit);
        socks[i].last = start;
    }
    uint64_t answered = 0, accepted = 0;
    static uint8_t rbufs[BATCH][4096];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (;;) {
        double t = now();
        int busy = 0;
        for (int i = 0; i < nsock; i++) {
            struct rsock *s = &socks[i];
            if (s->inflight && t - s->last > 2.0) { /* lost datagrams: count them gone */
                s->inflight = 0;
                if (warm) s->sent = limit; /* a warm-up pass ends at its first loss */
                radius_send(s, i, window, limit);
                s->last = t;
            }
            busy |= s->inflight > 0;
        }
        if (!busy || t >= end) break;
        struct epoll_event evs[64];
        int ready = epoll_wait(ep, evs, 64, 200);
        for (int e = 0; e < ready; e++) {
            int i = evs[e].data.u32;
            struct rsock *s = &socks[i];
            for (int k = 0; k < BATCH; k++) {
                iov[k].iov_base = rbufs[k];
                iov[k].iov_len = sizeof rbufs[k];
                memset(&msgs[k], 0, sizeof msgs[k]);
                msgs[k].msg_hdr.msg_iov = &iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) continue;
            for (int k = 0; k < got; k++) accepted += rbufs[k][0] == 2; /* Access-Accept */
            answered += got;
            s->inflight -= got;
            if (s->inflight < 0) s->inflight = 0;
            s->last = now();
            if (!warm && s->last >= end) continue;
            radius_send(s, i, got, limit);
        }
    }
    printf("%lu %lu %.6f %.6f\n", answered, accepted, now() - start, cpu() - cpu0);
    return 0;
}

/* --- LDAP --------------------------------------------------------------------------------- */

static int ber_len(uint8_t *out, size_t len) {
    if (len < 128) { out[0] = len; return 1; }
    if (len < 256) { out[0] = 0x81; out[1] = len; return 2; }
    out[0] = 0x82; out[1] = len >> 8; out[2] = len & 0xff;
    return 3;
}

/* A BindRequest with a 4-byte message id at offset 4 (patched per request). */
static int bind_pdu(uint8_t *out, const char *base, int user) {
    uint8_t body[512], op[600];
    char dn[300];
    int dlen = snprintf(dn, sizeof dn, "uid=%s,ou=patrons,%s", barcodes[user], base);
    size_t plen = strlen(pins[user]);
    int b = 0, o = 0, n = 0;
    body[b++] = 0x02; body[b++] = 1; body[b++] = 3; /* version */
    body[b++] = 0x04; b += ber_len(body + b, dlen); memcpy(body + b, dn, dlen); b += dlen;
    body[b++] = 0x80; b += ber_len(body + b, plen); memcpy(body + b, pins[user], plen); b += plen;
    op[o++] = 0x60; o += ber_len(op + o, b); memcpy(op + o, body, b); o += b;
    out[n++] = 0x30;
    if (o + 6 >= 128) { fprintf(stderr, "bind too long\n"); exit(2); }
    out[n++] = o + 6;
    out[n++] = 0x02; out[n++] = 4; n += 4; /* message id, patched */
    memcpy(out + n, op, o);
    return n + o;
}

struct lconn {
    int fd, next_user, len, done;
    uint32_t msgid, sent;
    uint8_t in[8192];
};

static uint8_t *pdus[MAX_USERS];
static int pdu_lens[MAX_USERS];

static void ldap_send(struct lconn *c) {
    uint8_t *p = pdus[c->next_user];
    uint32_t id = ++c->msgid & 0x7fffffff;
    p[4] = id >> 24; p[5] = id >> 16; p[6] = id >> 8; p[7] = id;
    if (write(c->fd, p, pdu_lens[c->next_user]) != pdu_lens[c->next_user]) c->done = 1;
    c->next_user = (c->next_user + 1) % users;
    c->sent++;
}

/* Length of the first complete PDU in buf (0: not complete yet); its result code in *code. */
static int ldap_frame(const uint8_t *buf, int len, int *code) {
    if (len < 2) return 0;
    int hl = 2, total;
    if (buf[1] & 0x80) {
        int k = buf[1] & 0x7f;
        if (len < 2 + k) return 0;
        total = 0;
        for (int i = 0; i < k; i++) total = total << 8 | buf[2 + i];
        hl = 2 + k;
    } else {
        total = buf[1];
    }
    if (len < hl + total) return 0;
    const uint8_t *p = buf + hl;
    p += 2 + p[1];                         /* message id */
    p += 1 + ((p[1] & 0x80) ? 1 + (p[1] & 0x7f) : 1); /* op tag and length */
    *code = p[0] == 0x0a ? p[2] : -1;      /* resultCode ENUMERATED */
    return hl + total;
}

static int run_ldap(char **argv) {
    struct sockaddr_in to = address(argv[2], argv[3]);
    int nconn = atoi(argv[6]), warm = atoi(argv[8]);
    double seconds = atof(argv[7]);
    load_users(argv[5]);
    for (int u = 0; u < users; u++) {
        pdus[u] = malloc(128);
        pdu_lens[u] = bind_pdu(pdus[u], argv[4], u);
    }
    int ep = epoll_create1(0), one = 1, open_conns = 0;
    struct lconn *conns = calloc(nconn, sizeof *conns);
    double start = now(), cpu0 = cpu(), end = start + (warm ? 300 : seconds);
    for (int i = 0; i < nconn; i++) {
        struct lconn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&to, sizeof to)) { perror("connect"); return 2; }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        c->next_user = (i * 131) % users;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        ldap_send(c);
        open_conns++;
    }
    uint64_t answered = 0, accepted = 0;
    while (open_conns && now() < end) {
        struct epoll_event evs[64];
        int ready = epoll_wait(ep, evs, 64, 200);
        for (int e = 0; e < ready; e++) {
            struct lconn *c = &conns[evs[e].data.u32];
            if (c->done) continue;
            int got = read(c->fd, c->in + c->len, sizeof c->in - c->len);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                c->done = 1;
                open_conns--;
                continue;
            }
            c->len += got;
            int code, used;
            while ((used = ldap_frame(c->in, c->len, &code)) > 0) {
                answered++;
                accepted += code == 0;
                memmove(c->in, c->in + used, c->len - used);
                c->len -= used;
                if ((warm && (int)c->sent >= users) || (!warm && now() >= end)) {
                    c->done = 1;
                    open_conns--;
                } else {
                    ldap_send(c);
                }
            }
        }
    }
    printf("%lu %lu %.6f %.6f\n", answered, accepted, now() - start, cpu() - cpu0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 10 && !strcmp(argv[1], "radius")) return run_radius(argv);
    if (argc == 9 && !strcmp(argv[1], "ldap")) return run_ldap(argv);
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
}
