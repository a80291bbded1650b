/* The bench's packet source and sink, in C so that the sender is not the
 * bottleneck being measured (a Python loop tops out far below a veth).
 *
 *   udp_blast send DST PORT COUNT [PPS]
 *                                   COUNT datagrams to DST:PORT back to back
 *                                   (sendmmsg, 64 a call), or paced at PPS;
 *                                   prints "sent=N elapsed_ns=T" when done
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

static int do_send(const char *ip, const char *port, unsigned long long count, double pps)
{
	struct sockaddr_in sa;
	if (addr_of(ip, port, &sa))
		return die("bad address");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return die("socket/connect");
	static char payload[PAYLOAD];
	struct iovec iov = {.iov_base = payload, .iov_len = PAYLOAD};
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
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "send"))
		return do_send(argv[2], argv[3], strtoull(argv[4], NULL, 10),
			       argc == 6 ? strtod(argv[5], NULL) : 0);
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return do_sink(argv[2], argv[3]);
	fprintf(stderr, "usage: %s send DST PORT COUNT [PPS] | sink ADDR PORT\n", argv[0]);
	return 2;
}
