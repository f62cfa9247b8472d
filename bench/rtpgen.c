/*
 * rtpgen: the load generator of bench/relay, in C so that it is not the bottleneck it measures.
 *
 * bench/relay compiles it at run time (gcc -O2, into a temporary directory) and speaks to it
 * exactly as to its Python generator: stdin gives the relay's ports, stdout gets "measure" when
 * the measured window opens and one JSON line with the results at the end.
 *
 * The "phones": one UDP socket per side (all a-legs send from one socket, all b-legs from
 * another), so a batch of due packets goes out with one sendmmsg per side and what the relay
 * forwards comes back in batches of recvmmsg. The relay still sees one far end per leg (each of
 * its sockets latches on its own peer address; that the far ends of different calls share an
 * address changes nothing in its per-socket work). Each leg sends 50 packets/s of 172 bytes
 * (12-byte RTP header, 160 bytes of PCMU silence whose first 24 bytes carry the send time, on
 * CLOCK_MONOTONIC for the measured window and on CLOCK_REALTIME, and the packet's slot number),
 * spread evenly over the 20 ms period.
 *
 * Latency is taken between two kernel timestamps, so that it is the same on both ends: the
 * software transmit timestamp of the packet as it enters the loopback device on its way to the
 * relay (SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE, read back from the socket's error queue)
 * and the receive timestamp of the relayed packet as it enters the loopback device on its way
 * back (SO_TIMESTAMPNS, with net.core.netdev_tstamp_prequeue at its default, 1). What lies between
 * is the hop to the relay, the relay, and its send; not this generator's own scheduling, neither
 * before it reads nor between stamping a packet and handing it to the kernel (when the generator
 * shares its CPU with a busy process it can be preempted there, and a latency counted from its own
 * stamp would charge that to the relay). That older figure, from the generator's CLOCK_REALTIME
 * stamp, is reported too ("p99_send_us"), with the generator's own delays: from the stamp to the
 * transmit timestamp ("stamp_to_tx"), and how late each packet went out against its slot in the
 * schedule ("late"): a late generator sends a burst, and the relay then has a queue to work off.
 * Without a transmit timestamp the stamp is used, without a receive timestamp the time of reading.
 *
 * Usage: rtpgen DURATION WARMUP DRAIN < ports   (ports: "N" then N lines "a_port b_port")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#define PERIOD_NS 20000000LL /* 50 packets per second per leg */
#define PAYLOAD 160
#define PACKET (12 + PAYLOAD)
#define BATCH 64
#define MIN_TICK_NS 50000LL /* wake at most every 50 us: due packets go out together */

static int64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* The kernel's receive time of a datagram (CLOCK_REALTIME), or -1 without one. */
static int64_t received_at(struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        }
    }
    return -1;
}

/* The software transmit time (CLOCK_REALTIME) of a packet from the error queue, or -1. */
static int64_t transmitted_at(struct msghdr *msg) {
    int64_t at = -1;
    int ours = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) {
            struct scm_timestamping ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            if (ts.ts[0].tv_sec || ts.ts[0].tv_nsec)
                at = (int64_t)ts.ts[0].tv_sec * 1000000000LL + ts.ts[0].tv_nsec;
        } else if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) {
            struct sock_extended_err err;
            memcpy(&err, CMSG_DATA(c), sizeof err);
            ours = err.ee_errno == ENOMSG && err.ee_origin == SO_EE_ORIGIN_TIMESTAMPING &&
                   err.ee_info == SCM_TSTAMP_SND;
        }
    }
    return ours ? at : -1;
}

/* The slot number a packet carries (the relay forwards the payload untouched), or -1. */
static long long slot_of(const unsigned char *packet, size_t length) {
    if (length < 36)
        return -1;
    long long slot;
    memcpy(&slot, packet + 28, 8);
    return slot;
}

static double pick(int64_t *values, size_t count, double fraction) {
    if (!count)
        return -1.0;
    size_t at = (size_t)(fraction * count);
    return values[at < count ? at : count - 1] / 1000.0;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: rtpgen DURATION WARMUP DRAIN < ports\n");
        return 2;
    }
    double duration = atof(argv[1]), warmup = atof(argv[2]), drain = atof(argv[3]);
    int calls;
    if (scanf("%d", &calls) != 1 || calls <= 0)
        die("ports");
    int legs = 2 * calls;
    struct sockaddr_in *targets = calloc(legs, sizeof *targets);
    unsigned char(*packets)[PACKET] = calloc(legs, PACKET);
    for (int call = 0; call < calls; call++) {
        int ports[2];
        if (scanf("%d %d", &ports[0], &ports[1]) != 2)
            die("ports");
        for (int side = 0; side < 2; side++) {
            int leg = 2 * call + side;
            targets[leg].sin_family = AF_INET;
            targets[leg].sin_port = htons(ports[side]);
            targets[leg].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            unsigned char *p = packets[leg];
            memset(p, 0xd5, PACKET);
            p[0] = 0x80; /* version 2 */
            p[1] = 0;    /* PCMU */
            uint32_t ssrc = htonl((uint32_t)leg);
            memcpy(p + 8, &ssrc, 4);
        }
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* sleep to the microsecond, not the default 50 us */

    int socks[2];
    for (int side = 0; side < 2; side++) {
        socks[side] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (socks[side] < 0)
            die("socket");
        int size = 1 << 24;
        setsockopt(socks[side], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        setsockopt(socks[side], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        int on = 1;
        setsockopt(socks[side], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
        /* software transmit timestamps, each returned with its packet on the error queue */
        int tx = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
        if (setsockopt(socks[side], SOL_SOCKET, SO_TIMESTAMPING, &tx, sizeof tx) < 0)
            perror("SO_TIMESTAMPING (latency from the generator's own stamp)");
        struct sockaddr_in local = {.sin_family = AF_INET};
        local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(socks[side], (struct sockaddr *)&local, sizeof local) < 0)
            die("bind");
    }

    int64_t start = now_ns();
    int64_t measure_from = start + (int64_t)(warmup * 1e9);
    int64_t end = measure_from + (int64_t)(duration * 1e9);
    int64_t stop = end + (int64_t)(drain * 1e9);
    /* Send slot k (k = 0, 1, ...) is due at start + k * PERIOD / legs, for leg k % legs. */
    /* per slot (every packet of the run): its stamps, filled in as they are known */
    size_t slots = (size_t)((warmup + duration + drain + 1) * legs * 1e9 / PERIOD_NS) + 1024;
    int64_t *wall_at = calloc(slots, sizeof *wall_at);   /* the generator's stamp (REALTIME) */
    int64_t *tx_at = calloc(slots, sizeof *tx_at);       /* kernel transmit time, 0: none */
    int64_t *rx_at = calloc(slots, sizeof *rx_at);       /* kernel receive time back, 0: none */
    int64_t *late_by = calloc(slots, sizeof *late_by);   /* sent after its slot's time, ns */
    unsigned char *measured = calloc(slots, 1);
    if (!wall_at || !tx_at || !rx_at || !late_by || !measured)
        die("calloc");
    size_t received = 0;
    long long sent = 0, sent_measured = 0, send_failed = 0, stamped_by_kernel = 0;
    long long tx_stamped = 0;
    int announced = 0;

    struct mmsghdr out[2][BATCH];
    struct iovec out_iov[2][BATCH];
    int out_count[2];
    static unsigned char in_buf[BATCH][2048];
    static unsigned char in_ctrl[BATCH][256];
    struct mmsghdr in[BATCH];
    struct iovec in_iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        in_iov[i].iov_base = in_buf[i];
        in_iov[i].iov_len = sizeof in_buf[i];
        memset(&in[i], 0, sizeof in[i]);
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    int64_t last_wake = 0;

    for (;;) {
        int64_t now = now_ns();
        if (now >= stop || (now >= end && (long long)received >= sent_measured))
            break;
        if (!announced && now >= measure_from) {
            printf("measure\n");
            fflush(stdout);
            announced = 1;
        }
        /* send everything due, in batches per side */
        int64_t until = now < end ? now : end;
        long long due = (until - start) * (long long)legs / PERIOD_NS + 1;
        while (sent < due) {
            out_count[0] = out_count[1] = 0;
            int64_t stamp = now_ns();
            int64_t wall = clock_ns(CLOCK_REALTIME);
            while (sent < due && out_count[0] < BATCH && out_count[1] < BATCH) {
                int leg = (int)(sent % legs);
                long long sequence = sent / legs;
                int side = leg & 1;
                unsigned char *p = packets[leg];
                uint16_t seq = htons((uint16_t)sequence);
                uint32_t ts = htonl((uint32_t)(sequence * PAYLOAD));
                memcpy(p + 2, &seq, 2);
                memcpy(p + 4, &ts, 4);
                long long slot = sent;
                memcpy(p + 12, &stamp, 8);
                memcpy(p + 20, &wall, 8);
                memcpy(p + 28, &slot, 8);
                if ((size_t)slot < slots) {
                    wall_at[slot] = wall;
                    late_by[slot] = stamp - (start + slot * PERIOD_NS / legs);
                    measured[slot] = stamp >= measure_from && stamp < end;
                }
                int n = out_count[side]++;
                out_iov[side][n].iov_base = p;
                out_iov[side][n].iov_len = PACKET;
                memset(&out[side][n], 0, sizeof out[side][n]);
                out[side][n].msg_hdr.msg_name = &targets[leg];
                out[side][n].msg_hdr.msg_namelen = sizeof targets[leg];
                out[side][n].msg_hdr.msg_iov = &out_iov[side][n];
                out[side][n].msg_hdr.msg_iovlen = 1;
                sent++;
                if (stamp >= measure_from && stamp < end)
                    sent_measured++;
            }
            for (int side = 0; side < 2; side++) {
                int done = 0;
                while (done < out_count[side]) {
                    int r = sendmmsg(socks[side], out[side] + done, out_count[side] - done, 0);
                    if (r < 0) {
                        if (errno == EINTR)
                            continue;
                        send_failed += out_count[side] - done; /* counted as lost */
                        break;
                    }
                    done += r;
                }
            }
        }
        /* the transmit timestamps of what went out, then everything that came back */
        for (int side = 0; side < 2; side++) {
            for (int queue = 0; queue < 2; queue++) {
                int flags = MSG_DONTWAIT | (queue == 0 ? MSG_ERRQUEUE : 0);
                for (;;) {
                    for (int i = 0; i < BATCH; i++) {
                        in[i].msg_hdr.msg_control = in_ctrl[i];
                        in[i].msg_hdr.msg_controllen = sizeof in_ctrl[i];
                    }
                    int r = recvmmsg(socks[side], in, BATCH, flags, NULL);
                    if (r <= 0)
                        break;
                    int64_t read_at = clock_ns(CLOCK_REALTIME);
                    for (int i = 0; i < r; i++) {
                        if (queue == 0) {
                            /* the packet as sent, headers first: the slot is in its last bytes */
                            size_t length = in[i].msg_len;
                            int64_t at = transmitted_at(&in[i].msg_hdr);
                            if (length < PACKET || at < 0)
                                continue;
                            long long slot = slot_of(in_buf[i] + length - PACKET, PACKET);
                            if (slot >= 0 && (size_t)slot < slots) {
                                tx_at[slot] = at;
                            }
                            continue;
                        }
                        long long slot = slot_of(in_buf[i], in[i].msg_len);
                        if (slot < 0 || (size_t)slot >= slots || !measured[slot] || rx_at[slot])
                            continue;
                        int64_t arrived = received_at(&in[i].msg_hdr);
                        if (arrived < 0)
                            arrived = read_at;
                        else
                            stamped_by_kernel++;
                        rx_at[slot] = arrived;
                        received++;
                    }
                    if (r < BATCH)
                        break;
                }
            }
        }
        /* sleep until the next packet is due or something arrives */
        now = now_ns();
        int64_t next = start + (sent * PERIOD_NS) / legs;
        if (now >= end)
            next = now + 10000000LL;
        if (next < last_wake + MIN_TICK_NS)
            next = last_wake + MIN_TICK_NS;
        int64_t wait = next - now;
        if (wait > 0) {
            struct pollfd fds[2] = {{socks[0], POLLIN, 0}, {socks[1], POLLIN, 0}};
            struct timespec timeout = {wait / 1000000000LL, wait % 1000000000LL};
            /* only wake early for arrivals once the minimum tick has passed */
            if (now < last_wake + MIN_TICK_NS) {
                struct timespec nap = {0, last_wake + MIN_TICK_NS - now};
                nanosleep(&nap, NULL);
                now = now_ns();
                wait = next - now;
                timeout.tv_sec = wait > 0 ? wait / 1000000000LL : 0;
                timeout.tv_nsec = wait > 0 ? wait % 1000000000LL : 0;
            }
            ppoll(fds, 2, &timeout, NULL);
        }
        last_wake = now_ns();
    }
    /* latency per packet sent in the window and relayed back: kernel to kernel, and (the older
     * figure) from the generator's stamp; the generator's own delays beside them */
    int64_t *kernel = malloc((received + 1) * sizeof *kernel);
    int64_t *from_stamp = malloc((received + 1) * sizeof *from_stamp);
    int64_t *stamp_to_tx = malloc((received + 1) * sizeof *stamp_to_tx);
    int64_t *late = malloc(((size_t)sent_measured + 1) * sizeof *late);
    size_t n_kernel = 0, n_stamp = 0, n_late = 0;
    for (size_t slot = 0; slot < slots; slot++) {
        if (!measured[slot])
            continue;
        late[n_late++] = late_by[slot];
        if (!rx_at[slot])
            continue;
        from_stamp[n_stamp++] = rx_at[slot] - wall_at[slot];
        kernel[n_kernel] = rx_at[slot] - (tx_at[slot] ? tx_at[slot] : wall_at[slot]);
        if (tx_at[slot]) {
            stamp_to_tx[n_kernel] = tx_at[slot] - wall_at[slot];
            tx_stamped++;
        } else {
            stamp_to_tx[n_kernel] = 0;
        }
        n_kernel++;
    }
    qsort(kernel, n_kernel, sizeof *kernel, compare);
    qsort(from_stamp, n_stamp, sizeof *from_stamp, compare);
    qsort(stamp_to_tx, n_kernel, sizeof *stamp_to_tx, compare);
    qsort(late, n_late, sizeof *late, compare);
    printf("{\"sent\": %lld, \"received\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f, "
           "\"p999_us\": %.1f, \"max_us\": %.1f, \"p50_send_us\": %.1f, \"p99_send_us\": %.1f, "
           "\"stamp_to_tx_p99_us\": %.1f, \"stamp_to_tx_max_us\": %.1f, \"late_p99_us\": %.1f, "
           "\"late_max_us\": %.1f, \"send_failed\": %lld, \"generator\": \"c\", "
           "\"kernel_stamped\": %lld, \"tx_stamped\": %lld}\n",
           sent_measured, received, pick(kernel, n_kernel, 0.50), pick(kernel, n_kernel, 0.99),
           pick(kernel, n_kernel, 0.999), pick(kernel, n_kernel, 1.0),
           pick(from_stamp, n_stamp, 0.50), pick(from_stamp, n_stamp, 0.99),
           pick(stamp_to_tx, n_kernel, 0.99), pick(stamp_to_tx, n_kernel, 1.0),
           pick(late, n_late, 0.99), pick(late, n_late, 1.0), send_failed, stamped_by_kernel,
           tx_stamped);
    fflush(stdout);
    return 0;
}
