/* SPDX-License-Identifier: MIT */
/*
 * cmd_metrics.c: heirloomctl metrics and stats --prometheus: the
 * Prometheus exposition (prom.c) of every segment named, on stdout or
 * served over HTTP at /metrics with libmicrohttpd (Debian's
 * libmicrohttpd-dev) for Prometheus to scrape. Reads segments only, as
 * stats does: no endpoint, no worker needed.
 *
 * The HTTP side: one listening socket, ours (so that a busy port or a
 * refused address is reported with its errno), handed to libmicrohttpd,
 * whose one internal thread answers the requests; each scrape takes a
 * fresh snapshot of every segment. The main thread waits for SIGINT or
 * SIGTERM, blocked everywhere else, and then stops the server.
 */
#include "ctl.h"
#include "out.h"
#include "prom.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The segments of the command line: every --name, or the one default. */
static int
seg_names(const struct ctl *c, const char *const **names)
{
	static const char *one[1];
	if (c->nnames) {
		*names = c->names;
		return c->nnames;
	}
	one[0] = c->name;
	*names = one;
	return 1;
}

int
ctl_prometheus_stdout(struct ctl *c)
{
	const char *const *names;
	int n = seg_names(c, &names);
	struct prom_seg *segs = calloc((size_t)n, sizeof(*segs));
	if (!segs)
		return ctl_fail(c, CTL_FAILED, -ENOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		int rc = prom_snap(&segs[i], names[i]);
		if (rc) {
			free(segs);
			c->name = names[i]; /* the message names the one that failed */
			return ctl_fail_segment(c, rc);
		}
	}
	int rc = prom_write(stdout, segs, (size_t)n);
	free(segs);
	return rc || fflush(stdout) ? CTL_FAILED : CTL_OK;
}

/* ---- --listen ---- */

struct server {
	const char *const *names;
	int n;
	int *last_err; /* per segment: its error at the previous scrape */
};

/* Say on stderr when a segment stops or starts being readable, once per
 * change rather than at every scrape. */
static void
note_change(struct server *sv, int i, int err)
{
	if (err == sv->last_err[i])
		return;
	sv->last_err[i] = err;
	if (err)
		fprintf(stderr,
		        "heirloomctl: metrics: segment '%s' cannot be read: %s (heirloom_up 0)\n",
		        sv->names[i], hl_strerror(err));
	else
		fprintf(stderr, "heirloomctl: metrics: segment '%s' can be read again\n",
		        sv->names[i]);
}

/* Answer STATUS with BODY: the exposition (MUST_FREE: ours to free, and
 * typed as Prometheus text) or a static message. */
static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, char *body, size_t len, int must_free)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	        len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		if (must_free)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        must_free ? CONTENT_TYPE : "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

static char *
exposition(struct server *sv, size_t *len)
{
	struct prom_seg *segs = calloc((size_t)sv->n, sizeof(*segs));
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	if (!segs || !f) {
		free(segs);
		if (f)
			fclose(f);
		free(buf);
		return NULL;
	}
	for (int i = 0; i < sv->n; i++)
		note_change(sv, i, prom_snap(&segs[i], sv->names[i]));
	int rc = prom_write(f, segs, (size_t)sv->n);
	free(segs);
	if (fclose(f) != 0 || rc) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* libmicrohttpd's request handler (its thread). GET or HEAD /metrics: the
 * exposition; / a pointer to it; anything else 404 or 405. */
static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
       const char *version, const char *upload_data, size_t *upload_data_size, void **req)
{
	(void)version, (void)upload_data, (void)upload_data_size, (void)req;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
		static char not_allowed[] = "only GET and HEAD\n";
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed,
		             sizeof(not_allowed) - 1, 0);
	}
	if (strcmp(url, "/") == 0) {
		static char index_page[] = "heirloom metrics exporter: /metrics\n";
		return reply(conn, MHD_HTTP_OK, index_page, sizeof(index_page) - 1, 0);
	}
	if (strcmp(url, "/metrics") != 0) {
		static char not_found[] = "not found; the metrics are at /metrics\n";
		return reply(conn, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1, 0);
	}
	size_t len = 0;
	char *body = exposition(cls, &len);
	if (!body) {
		static char failed[] = "cannot build the exposition (out of memory)\n";
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, sizeof(failed) - 1, 0);
	}
	return reply(conn, MHD_HTTP_OK, body, len, 1);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	fputs("heirloomctl: metrics: ", stderr);
	vfprintf(stderr, fmt, ap);
}

/*
 * --listen ADDR: "PORT" (on 127.0.0.1), "HOST:PORT" or "[IPV6]:PORT".
 * Loopback unless a host is given: an exporter on every interface is a
 * choice to make explicitly (0.0.0.0:PORT, [::]:PORT). Returns a bound,
 * listening socket, or -1 after reporting (*code: the exit code).
 */
static int
listen_on(struct ctl *c, const char *addr, int *code)
{
	char host[256];
	const char *port;
	const char *colon = strrchr(addr, ':');
	*code = CTL_USAGE;
	if (!colon) {
		snprintf(host, sizeof(host), "127.0.0.1");
		port = addr;
	} else if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (!close || close + 1 != colon || close - addr - 1 >= (long)sizeof(host)) {
			ctl_fail(c, CTL_USAGE, 0, "--listen '%s': expected [IPV6]:PORT", addr);
			return -1;
		}
		snprintf(host, sizeof(host), "%.*s", (int)(close - addr - 1), addr + 1);
		port = colon + 1;
	} else {
		if (colon == addr || colon - addr >= (long)sizeof(host)) {
			ctl_fail(
			        c, CTL_USAGE, 0,
			        "--listen '%s': give the host: 127.0.0.1:PORT (this machine only), "
			        "0.0.0.0:PORT or [::]:PORT (every interface)",
			        addr);
			return -1;
		}
		snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
		port = colon + 1;
	}
	uint64_t pn;
	if (ctl_parse_u64(port, 0, 65535, &pn)) {
		ctl_fail(c, CTL_USAGE, 0, "--listen '%s': the port must be 0 to 65535, not '%s'",
		         addr, port);
		return -1;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
		                  .ai_socktype = SOCK_STREAM,
		                  .ai_flags = AI_NUMERICSERV },
	                *ai = NULL;
	int rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		ctl_fail(c, CTL_USAGE, 0, "--listen '%s': host '%s': %s", addr, host,
		         gai_strerror(rc));
		return -1;
	}
	*code = CTL_FAILED;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		int err = errno;
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		ctl_fail(c, CTL_FAILED, -err, "cannot listen on %s: %s%s", addr, strerror(err),
		         err == EADDRINUSE ? ": another process listens there; stop it or give "
		                             "--listen another port"
		         : err == EACCES   ? ": ports below 1024 need privilege; use a higher one"
		         : err == EADDRNOTAVAIL ? ": no interface of this machine has that address"
		                                : "");
		return -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* "http://HOST:PORT/metrics" of the socket FD, into BUF. */
static void
url_of(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
		            NI_NUMERICHOST | NI_NUMERICSERV);
	if (strchr(host, ':'))
		snprintf(buf, len, "http://[%s]:%s/metrics", host, port);
	else
		snprintf(buf, len, "http://%s:%s/metrics", host, port);
}

static int
serve(struct ctl *c, const char *addr)
{
	struct server sv = { 0 };
	sv.n = seg_names(c, &sv.names);
	int code, fd = listen_on(c, addr, &code);
	if (fd < 0)
		return code;
	sv.last_err = calloc((size_t)sv.n, sizeof(int));
	if (!sv.last_err) {
		close(fd);
		return ctl_fail(c, CTL_FAILED, -ENOMEM, "out of memory");
	}
	/* Blocked here, before libmicrohttpd's thread exists, so that only
	 * sigwait() below takes them. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	struct MHD_Daemon *d = MHD_start_daemon(
	        flags, 0, NULL, NULL, handle, &sv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, 64u,
	        MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	/* From here libmicrohttpd owns FD: MHD_stop_daemon() closes it. */
	if (!d) {
		free(sv.last_err);
		return ctl_fail(c, CTL_FAILED, 0, "cannot start the HTTP server on %s", addr);
	}
	char url[128];
	url_of(fd, url, sizeof(url));
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_obj_begin(&o, NULL);
		out_str(&o, "url", url);
		out_obj_end(&o);
		out_finish(&o);
	} else {
		printf("serving %s\n", url);
		fflush(stdout);
	}
	int sig = 0;
	while (sigwait(&stop, &sig) != 0)
		;
	MHD_stop_daemon(d);
	free(sv.last_err);
	return CTL_OK;
}

int
ctl_cmd_metrics(struct ctl *c, const struct ctl_args *a)
{
	if (a->set[METRICS_LISTEN])
		return serve(c, a->val[METRICS_LISTEN]);
	return ctl_prometheus_stdout(c);
}
