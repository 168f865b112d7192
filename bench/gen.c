/* pyvs bench traffic tool: a sendmmsg UDP generator, a UDP ping-pong prober and a
 * UDP echo server, in one small binary compiled by bench/tools.py at run time.
 *
 *   gen flood    --dst A --dport P [--src A] [--sport-base B] [--ports N]
 *                [--count C] [--duration S] [--rate PPS] [--batch K] [--size BYTES]
 *                [--cpu N] [--pace-us U]
 *       64-byte (--size) UDP payloads from N source ports (one connected socket per
 *       port, round robin per batch) toward one address:port.  Stops at --count
 *       packets or after --duration seconds, whichever comes first (both are always
 *       bounded: count defaults to 10 M, duration to 10 s).  --rate 0 = as fast as
 *       possible.  Prints one JSON line: sent, errors, elapsed, pps.
 *       With --rate, batches are sized to last --pace-us microseconds (default 50,
 *       bursts short enough not to be why a queue overflows); the wait for the next
 *       batch spins its last ~100 us for precision, unless --pace-us is 1000 or more:
 *       then the generator only sleeps, so it uses CPU only for what it sends (the
 *       per-core cost measurement needs that: a spinning generator would hide the
 *       director's work on its CPU).
 *       With --ifname IF --dmac MAC (and --src) the same UDP/IPv4 frames are built
 *       once and sent with sendmmsg on an AF_PACKET socket bound to IF
 *       (PACKET_QDISC_BYPASS): no socket lookup or routing per packet, so the
 *       generator is ~2x faster; the source port still rotates per packet.
 *   gen pingpong --dst A --dport P [--src A] [--count C] [--duration S]
 *                [--interval-us U] [--timeout-ms T]
 *       One probe at a time: send (seq, timestamp), wait for the echo, record the RTT.
 *       Prints one JSON line: sent, received, lost, p50_us p90_us p99_us max_us mean_us.
 *   gen synflood --dst A --dport P --src A --ifname IF --dmac MAC [--span N]
 *                [--count C] [--duration S] [--rate PPS] [--batch K]
 *       TCP SYNs with spoofed sources, as a SYN flood is: every packet comes from a new
 *       (address, port) pair, addresses --src .. --src + N-1 (N = --span, default
 *       65536), ports 1024.. rotating, so each one is a new connection to the target.
 *       AF_PACKET frames like flood's raw mode.  Prints one JSON line like flood.
 *   gen echo     --port P [--duration S]
 *       Echo every datagram back to its sender, until SIGTERM or --duration.
 *
 * IPv4 only (the bench lab is IPv4).  Nothing here loops without a time bound.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 256
#define MAX_PORTS 4096
#define MAX_SIZE 1472

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "gen: %s: %s\n", what, strerror(errno));
    exit(2);
}

struct opts {
    const char *mode, *dst, *src, *ifname, *dmac;
    int dport, sport_base, ports, batch, size, cpu, interval_us, timeout_ms, port, span;
    int pace_us;
    long long count;
    double duration, rate;
};

static void parse(int argc, char **argv, struct opts *o) {
    memset(o, 0, sizeof *o);
    o->sport_base = 20000; o->ports = 1024; o->batch = 32; o->size = 64; o->cpu = -1;
    o->count = 10000000; o->duration = 10.0; o->interval_us = 100; o->timeout_ms = 200;
    o->span = 65536; o->pace_us = 50;
    if (argc < 2) { fprintf(stderr, "usage: gen flood|pingpong|echo [options]\n"); exit(2); }
    o->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "gen: %s needs a value\n", k); exit(2); }
        const char *v = argv[++i];
        if (!strcmp(k, "--dst")) o->dst = v;
        else if (!strcmp(k, "--src")) o->src = v;
        else if (!strcmp(k, "--ifname")) o->ifname = v;
        else if (!strcmp(k, "--dmac")) o->dmac = v;
        else if (!strcmp(k, "--dport")) o->dport = atoi(v);
        else if (!strcmp(k, "--port")) o->port = atoi(v);
        else if (!strcmp(k, "--sport-base")) o->sport_base = atoi(v);
        else if (!strcmp(k, "--ports")) o->ports = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--size")) o->size = atoi(v);
        else if (!strcmp(k, "--cpu")) o->cpu = atoi(v);
        else if (!strcmp(k, "--count")) o->count = atoll(v);
        else if (!strcmp(k, "--duration")) o->duration = atof(v);
        else if (!strcmp(k, "--rate")) o->rate = atof(v);
        else if (!strcmp(k, "--interval-us")) o->interval_us = atoi(v);
        else if (!strcmp(k, "--timeout-ms")) o->timeout_ms = atoi(v);
        else if (!strcmp(k, "--span")) o->span = atoi(v);
        else if (!strcmp(k, "--pace-us")) o->pace_us = atoi(v);
        else { fprintf(stderr, "gen: unknown option %s\n", k); exit(2); }
    }
    if (o->ports < 1 || o->ports > MAX_PORTS) { fprintf(stderr, "gen: bad --ports\n"); exit(2); }
    if (o->batch < 1 || o->batch > MAX_BATCH) { fprintf(stderr, "gen: bad --batch\n"); exit(2); }
    if (o->size < 16 || o->size > MAX_SIZE) { fprintf(stderr, "gen: bad --size\n"); exit(2); }
    if (o->duration <= 0 || o->duration > 3600) { fprintf(stderr, "gen: --duration 0..3600\n"); exit(2); }
    if (o->count < 1) { fprintf(stderr, "gen: bad --count\n"); exit(2); }
    if (o->span < 1 || o->span > (1 << 20)) { fprintf(stderr, "gen: bad --span\n"); exit(2); }
    if (o->pace_us < 1 || o->pace_us > 100000) { fprintf(stderr, "gen: --pace-us 1..100000\n"); exit(2); }
}

static void sockaddr_of(struct sockaddr_in *sa, const char *addr, int port) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (addr == NULL) sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
        fprintf(stderr, "gen: bad IPv4 address %s\n", addr);
        exit(2);
    }
}

static int udp_socket(const char *src, int sport, const char *dst, int dport) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct timeval tv = {0, 100000}; /* a send never blocks more than 100 ms */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    if (src || sport) {
        sockaddr_of(&sa, src, sport);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    }
    if (dst) {
        sockaddr_of(&sa, dst, dport);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    }
    return fd;
}

static uint16_t ip_csum(const void *hdr, int len) {
    const uint16_t *w = hdr;
    uint32_t sum = 0;
    for (int i = 0; i < len / 2; i++) sum += w[i];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* The UDP checksum over the IPv4 pseudo-header and the datagram (0 is sent 0xffff). */
static uint16_t udp_csum(const struct iphdr *ip, const unsigned char *udp, int len) {
    uint32_t sum = 0;
    const uint16_t *w = (const uint16_t *)&ip->saddr;
    for (int i = 0; i < 4; i++) sum += w[i]; /* saddr, daddr */
    sum += htons(IPPROTO_UDP) + htons((uint16_t)len);
    for (int i = 0; i + 1 < len; i += 2) sum += (uint32_t)(udp[i] | (udp[i + 1] << 8));
    if (len & 1) sum += udp[len - 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    uint16_t c = (uint16_t)~sum;
    return c ? c : 0xffff;
}

/* One AF_PACKET socket on o->ifname and `ports` prebuilt Ethernet frames. */
static int raw_setup(struct opts *o, char **frames_out, int *flen_out) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) die("socket(AF_PACKET)");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", o->ifname);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) die("SIOCGIFINDEX");
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) die("SIOCGIFHWADDR");
    unsigned char smac[6], dmac[6];
    memcpy(smac, ifr.ifr_hwaddr.sa_data, 6);
    if (sscanf(o->dmac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dmac[0], &dmac[1], &dmac[2],
               &dmac[3], &dmac[4], &dmac[5]) != 6) {
        fprintf(stderr, "gen: bad --dmac %s\n", o->dmac);
        exit(2);
    }
    int one = 1;
    setsockopt(fd, SOL_PACKET, 20 /* PACKET_QDISC_BYPASS */, &one, sizeof one);
    struct sockaddr_ll ll = {0};
    ll.sll_family = AF_PACKET;
    ll.sll_ifindex = ifindex;
    ll.sll_protocol = 0; /* send only */
    if (bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0) die("bind(AF_PACKET)");
    struct timeval tv = {0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in s, d;
    sockaddr_of(&s, o->src, 0);
    sockaddr_of(&d, o->dst, 0);
    int flen = 14 + 20 + 8 + o->size;
    char *frames = calloc((size_t)o->ports, (size_t)flen);
    for (int p = 0; p < o->ports; p++) {
        unsigned char *f = (unsigned char *)frames + (size_t)p * flen;
        memcpy(f, dmac, 6);
        memcpy(f + 6, smac, 6);
        f[12] = 0x08; f[13] = 0x00;
        struct iphdr *ip = (struct iphdr *)(f + 14);
        ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP;
        ip->tot_len = htons((uint16_t)(20 + 8 + o->size));
        ip->id = htons((uint16_t)p);
        ip->frag_off = htons(0x4000); /* DF, as a Linux UDP socket sends (IP_PMTUDISC_WANT) */
        ip->saddr = s.sin_addr.s_addr;
        ip->daddr = d.sin_addr.s_addr;
        ip->check = ip_csum(ip, 20);
        struct udphdr *udp = (struct udphdr *)(f + 34);
        udp->source = htons((uint16_t)(o->sport_base + p));
        udp->dest = htons((uint16_t)o->dport);
        udp->len = htons((uint16_t)(8 + o->size));
        for (int i = 0; i < o->size; i++) f[42 + i] = (unsigned char)('a' + i % 26);
        udp->check = 0; /* then the checksum, as a Linux UDP socket sends it */
        udp->check = udp_csum(ip, f + 34, 8 + o->size);
    }
    *frames_out = frames;
    *flen_out = flen;
    return fd;
}

/* Sleep until t; with spin, sleep to ~100 us before it and spin the rest. */
static void sleep_until(double t, int spin) {
    double d = t - now_s();
    if (!spin) {
        if (d > 0) {
            struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
            nanosleep(&ts, NULL);
        }
        return;
    }
    if (d > 200e-6) {
        d -= 100e-6;
        struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
    while (now_s() < t && !stop_flag) { /* spin the last ~100 us */ }
}

static int flood(struct opts *o) {
    if (!o->dst || !o->dport) { fprintf(stderr, "gen flood: --dst and --dport needed\n"); return 2; }
    if (o->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o->cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0) perror("gen: sched_setaffinity");
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o->ports + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)o->ports + 64 ? rl.rlim_max : (rlim_t)o->ports + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int raw = o->ifname != NULL;
    int rawfd = -1, flen = 0;
    char *frames = NULL;
    int *fds = calloc(o->ports, sizeof *fds);
    if (raw) {
        if (!o->dmac || !o->src) { fprintf(stderr, "gen: --ifname needs --dmac and --src\n"); return 2; }
        rawfd = raw_setup(o, &frames, &flen);
    } else {
        for (int i = 0; i < o->ports; i++)
            fds[i] = udp_socket(o->src, o->sport_base + i, o->dst, o->dport);
    }

    /* With a rate limit, batches are sized so one batch lasts --pace-us (~50 us by
     * default): bursts stay short enough not to be the reason a queue overflows. */
    int batch = o->batch;
    int spin = o->pace_us < 1000;
    if (o->rate > 0) {
        int b = (int)(o->rate * o->pace_us * 1e-6);
        if (b < 1) b = 1;
        if (b < batch) batch = b;
    }
    static char payload[MAX_SIZE];
    for (int i = 0; i < o->size; i++) payload[i] = (char)('a' + i % 26);
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < batch; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = (size_t)o->size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, errors = 0;
    double start = now_s(), deadline = start + o->duration, t = start;
    int next = 0;
    while (sent < o->count && !stop_flag) {
        if (o->rate > 0) {
            double due = start + sent / o->rate;
            if (due > deadline) break;
            sleep_until(due, spin);
        }
        t = now_s();
        if (t >= deadline) break;
        int want = batch;
        if (o->count - sent < want) want = (int)(o->count - sent);
        int n;
        if (raw) {
            for (int i = 0; i < want; i++) {
                iov[i].iov_base = frames + (size_t)((next + i) % o->ports) * flen;
                iov[i].iov_len = (size_t)flen;
            }
            n = sendmmsg(rawfd, msgs, (unsigned)want, 0);
        } else {
            n = sendmmsg(fds[next], msgs, (unsigned)want, 0);
        }
        if (n < 0) {
            errors++;
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED)
                die("sendmmsg");
        } else {
            sent += n;
        }
        if (raw) next = (next + want) % o->ports;
        else if (++next == o->ports) next = 0;
    }
    double elapsed = now_s() - start;
    printf("{\"mode\": \"flood\", \"sent\": %lld, \"errors\": %lld, \"elapsed\": %.6f, "
           "\"pps\": %.1f, \"batch\": %d, \"ports\": %d, \"size\": %d, \"raw\": %d}\n",
           sent, errors, elapsed, elapsed > 0 ? sent / elapsed : 0.0, batch, o->ports, o->size,
           raw);
    return 0;
}

/* TCP checksum over the IPv4 pseudo-header and a 20-byte header without payload. */
static uint16_t tcp_csum(const struct iphdr *ip, const unsigned char *tcp) {
    uint32_t sum = 0;
    const uint16_t *w = (const uint16_t *)&ip->saddr;
    for (int i = 0; i < 4; i++) sum += w[i]; /* saddr, daddr */
    sum += htons(IPPROTO_TCP) + htons(20);
    w = (const uint16_t *)tcp;
    for (int i = 0; i < 10; i++) sum += w[i];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int synflood(struct opts *o) {
    if (!o->dst || !o->dport || !o->src || !o->ifname || !o->dmac) {
        fprintf(stderr, "gen synflood: --dst --dport --src --ifname --dmac needed\n");
        return 2;
    }
    o->ports = o->batch;
    o->size = 16; /* raw_setup builds UDP frames; they are rewritten as SYNs below */
    int flen = 0;
    char *frames = NULL;
    int fd = raw_setup(o, &frames, &flen);
    flen = 14 + 20 + 20;
    for (int i = 0; i < o->batch; i++) /* repack at the SYN frame length */
        memmove(frames + (size_t)i * flen, frames + (size_t)i * (14 + 20 + 8 + 16), 34);
    struct sockaddr_in s;
    sockaddr_of(&s, o->src, 0);
    uint32_t base = ntohl(s.sin_addr.s_addr);
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < o->batch; i++) {
        unsigned char *f = (unsigned char *)frames + (size_t)i * flen;
        struct iphdr *ip = (struct iphdr *)(f + 14);
        ip->protocol = IPPROTO_TCP;
        ip->tot_len = htons(40);
        unsigned char *t = f + 34;
        memset(t, 0, 20);
        t[2] = (unsigned char)(o->dport >> 8); t[3] = (unsigned char)o->dport;
        t[12] = 5 << 4; t[13] = 0x02; /* SYN */
        t[14] = 0xfa; t[15] = 0xf0; /* window 64240 */
        iov[i].iov_base = f;
        iov[i].iov_len = (size_t)flen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, errors = 0, k = 0;
    double start = now_s(), deadline = start + o->duration;
    while (sent < o->count && !stop_flag) {
        if (o->rate > 0) {
            double due = start + sent / o->rate;
            if (due > deadline) break;
            sleep_until(due, 1);
        }
        if (now_s() >= deadline) break;
        int want = o->batch;
        if (o->count - sent < want) want = (int)(o->count - sent);
        for (int i = 0; i < want; i++, k++) {
            unsigned char *f = (unsigned char *)frames + (size_t)i * flen;
            struct iphdr *ip = (struct iphdr *)(f + 14);
            unsigned char *t = f + 34;
            uint32_t src = base + (uint32_t)(k % o->span);
            uint16_t sport = (uint16_t)(1024 + (k / o->span) % 64000);
            ip->saddr = htonl(src);
            ip->id = htons((uint16_t)k);
            ip->check = 0;
            ip->check = ip_csum(ip, 20);
            t[0] = (unsigned char)(sport >> 8); t[1] = (unsigned char)sport;
            uint32_t seq = (uint32_t)(k * 2654435761u);
            memcpy(t + 4, &seq, 4);
            t[16] = t[17] = 0;
            uint16_t c = tcp_csum(ip, t);
            memcpy(t + 16, &c, 2);
        }
        int n = sendmmsg(fd, msgs, (unsigned)want, 0);
        if (n < 0) {
            errors++;
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) die("sendmmsg");
        } else {
            sent += n;
        }
    }
    double elapsed = now_s() - start;
    printf("{\"mode\": \"synflood\", \"sent\": %lld, \"errors\": %lld, \"elapsed\": %.6f, "
           "\"pps\": %.1f, \"batch\": %d, \"span\": %d}\n",
           sent, errors, elapsed, elapsed > 0 ? sent / elapsed : 0.0, o->batch, o->span);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, long n, double p) {
    if (n == 0) return -1;
    long i = (long)(p * (n - 1) + 0.5);
    return v[i];
}

static int pingpong(struct opts *o) {
    if (!o->dst || !o->dport) { fprintf(stderr, "gen pingpong: --dst and --dport needed\n"); return 2; }
    if (o->count > 1000000) o->count = 1000000;
    int fd = udp_socket(o->src, 0, o->dst, o->dport);
    double *rtt = calloc((size_t)o->count, sizeof *rtt);
    long received = 0;
    long long sent = 0;
    char buf[2048];
    double start = now_s(), deadline = start + o->duration;
    while (sent < o->count && !stop_flag && now_s() < deadline) {
        uint64_t seq = (uint64_t)sent;
        double t0 = now_s();
        memset(buf, 0, 64);
        memcpy(buf, &seq, sizeof seq);
        memcpy(buf + 8, &t0, sizeof t0);
        if (send(fd, buf, 64, 0) < 0) { sent++; continue; }
        sent++;
        double wait_until = t0 + o->timeout_ms * 1e-3;
        for (;;) {
            int left = (int)((wait_until - now_s()) * 1000) + 1;
            if (left <= 0) break;
            struct pollfd pfd = {fd, POLLIN, 0};
            if (poll(&pfd, 1, left) <= 0) break;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 16) continue; /* ICMP error or junk: keep waiting until timeout */
            uint64_t got;
            memcpy(&got, buf, sizeof got);
            if (got != seq) continue; /* a late echo of an earlier probe */
            rtt[received++] = (now_s() - t0) * 1e6;
            break;
        }
        if (o->interval_us > 0) sleep_until(t0 + o->interval_us * 1e-6, 1);
    }
    qsort(rtt, (size_t)received, sizeof *rtt, cmp_double);
    double sum = 0;
    for (long i = 0; i < received; i++) sum += rtt[i];
    printf("{\"mode\": \"pingpong\", \"sent\": %lld, \"received\": %ld, \"lost\": %lld, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"mean_us\": %.1f}\n",
           sent, received, sent - received, pct(rtt, received, 0.5), pct(rtt, received, 0.9),
           pct(rtt, received, 0.99), received ? rtt[received - 1] : -1.0,
           received ? sum / received : -1.0);
    return 0;
}

static int echo(struct opts *o) {
    if (!o->port) { fprintf(stderr, "gen echo: --port needed\n"); return 2; }
    int fd = udp_socket(NULL, o->port, NULL, 0);
    char buf[2048];
    double deadline = now_s() + o->duration;
    long long n = 0;
    fprintf(stderr, "gen echo: listening on udp %d\n", o->port);
    fflush(stderr);
    while (!stop_flag && now_s() < deadline) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0) continue;
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t r = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&peer, &plen);
        if (r < 0) continue;
        sendto(fd, buf, (size_t)r, MSG_DONTWAIT, (struct sockaddr *)&peer, plen);
        n++;
    }
    printf("{\"mode\": \"echo\", \"echoed\": %lld}\n", n);
    return 0;
}

int main(int argc, char **argv) {
    struct opts o;
    parse(argc, argv, &o);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(o.mode, "flood")) return flood(&o);
    if (!strcmp(o.mode, "pingpong")) return pingpong(&o);
    if (!strcmp(o.mode, "synflood")) return synflood(&o);
    if (!strcmp(o.mode, "echo")) {
        if (o.duration == 10.0) o.duration = 3600;
        return echo(&o);
    }
    fprintf(stderr, "gen: unknown mode %s\n", o.mode);
    return 2;
}
