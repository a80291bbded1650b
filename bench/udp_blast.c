/* The bench's packet source and sink, in C so that the sender is not the
 * bottleneck being measured (a Python loop tops out far below a veth).
 *
 *   udp_blast send DST PORT COUNT [PPS [VNI]]
 *                                   COUNT datagrams to DST:PORT back to back
 *                                   (sendmmsg, 64 a call), or paced at PPS
 *                                   (0: back to back); with VNI each is a
 *                                   VXLAN packet (send it to port 4789) of
 *                                   that VNI holding an Ethernet frame of one
 *                                   IPv4 datagram to port 9 with the same
 *                                   32-byte payload; prints "sent=N
 *                                   elapsed_ns=T" when done
 *   udp_blast sink ADDR PORT        binds ADDR:PORT and never reads: with the
 *                                   smallest receive buffer the datagrams are
 *                                   dropped at the socket (after ip_rcv), and
 *                                   no ICMP port-unreachable travels back
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PAYLOAD 32
#define VXLAN_HLEN (8 + 14 + 20 + 8) /* VXLAN, inner Ethernet, IPv4, UDP */

static int die(const char *what)
{
	perror(what);
	return 1;
}

static int addr_of(const char *ip, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)atoi(port));
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* The inner headers: 198.18.200.2:40000 -> 198.18.200.1:9 (checksum 0: no
 * one validates it on the way to ovslat's probes, and a receiver with no
 * socket on 4789 answers each with ICMP, rate-limited) */
static size_t vxlan_headers(unsigned char *b, unsigned int vni)
{
	static const unsigned char eth[14] = {0x02, 0, 0, 0, 0,	   0x01, 0x02,
					      0,    0, 0, 0, 0x02, 0x08, 0x00};
	unsigned char *ip = b + 8 + 14, *udp = ip + 20;
	unsigned int sum = 0;

	memset(b, 0, VXLAN_HLEN);
	b[0] = 0x08; /* the I flag: the VNI is valid */
	b[4] = vni >> 16, b[5] = vni >> 8, b[6] = vni;
	memcpy(b + 8, eth, sizeof(eth));
	ip[0] = 0x45, ip[3] = 20 + 8 + PAYLOAD, ip[8] = 64, ip[9] = 17;
	ip[12] = 198, ip[13] = 18, ip[14] = 200, ip[15] = 2;
	ip[16] = 198, ip[17] = 18, ip[18] = 200, ip[19] = 1;
	for (int i = 0; i < 20; i += 2)
		sum += ip[i] << 8 | ip[i + 1];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = ~(sum + (sum >> 16)) & 0xffff;
	ip[10] = sum >> 8, ip[11] = sum;
	udp[0] = 40000 >> 8, udp[1] = 40000 & 0xff, udp[3] = 9, udp[5] = 8 + PAYLOAD;
	return VXLAN_HLEN;
}

static int do_send(const char *ip, const char *port, unsigned long long count, double pps, int vni)
{
	struct sockaddr_in sa;
	if (addr_of(ip, port, &sa))
		return die("bad address");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return die("socket/connect");
	static unsigned char payload[VXLAN_HLEN + PAYLOAD];
	size_t hdr = vni >= 0 ? vxlan_headers(payload, (unsigned int)vni) : 0;
	struct iovec iov = {.iov_base = payload, .iov_len = hdr + PAYLOAD};
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	unsigned long long sent = 0, start = now_ns();
	while (sent < count) {
		unsigned int n = count - sent < BATCH ? (unsigned int)(count - sent) : BATCH;
		int r = sendmmsg(fd, msgs, n, 0);
		if (r < 0) {
			if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR)
				continue; /* the qdisc-less veth can push back: retry, keep the
					     count exact */
			return die("sendmmsg");
		}
		sent += (unsigned int)r;
		if (pps > 0) { /* paced: sleep until this many datagrams are due */
			unsigned long long due = start + (unsigned long long)(sent * 1e9 / pps),
					   t = now_ns();
			if (due > t) {
				struct timespec ts = {.tv_sec = (due - t) / 1000000000ull,
						      .tv_nsec = (due - t) % 1000000000ull};
				nanosleep(&ts, NULL);
			}
		}
	}
	unsigned long long elapsed = now_ns() - start;
	printf("sent=%llu elapsed_ns=%llu\n", sent, elapsed);
	return 0;
}

static int do_sink(const char *ip, const char *port)
{
	struct sockaddr_in sa;
	if (addr_of(ip, port, &sa))
		return die("bad address");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int small = 1; /* the kernel rounds it up to its minimum */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return die("socket/bind");
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc >= 5 && argc <= 7 && !strcmp(argv[1], "send"))
		return do_send(argv[2], argv[3], strtoull(argv[4], NULL, 10),
			       argc >= 6 ? strtod(argv[5], NULL) : 0,
			       argc == 7 ? atoi(argv[6]) : -1);
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return do_sink(argv[2], argv[3]);
	fprintf(stderr, "usage: %s send DST PORT COUNT [PPS [VNI]] | sink ADDR PORT\n", argv[0]);
	return 2;
}
