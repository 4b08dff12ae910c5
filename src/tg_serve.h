/*
 * tg_serve.h -- `tgrun serve`: a Testground sync service (the websocket
 * protocol of tg_syncmsg.h) backed by Redis in tgrun's own key layout, so
 * that Go/JS SDK instances talking to it and tgrun instances talking to
 * Redis directly meet at the same barriers and topics of one run.
 *
 * Each request runs what a tgrun instance runs (a user of the transport,
 * like tg_barrier and tg_topic, with requests, callbacks and watched
 * streams):
 *   signal_entry  enter.lua (INCR; notifies waiters whose target it reaches)
 *   barrier       await.lua (count + registered target), then released by
 *                 the run's notify stream (P:tg:notify) -- pushed, no poll --
 *                 with a 1 s MGET safety net for plain-INCR clients
 *   publish       publish.lua (XADD + XLEN: the seq)
 *   subscribe     one watch of the topic's stream per topic, read from its
 *                 first entry; every subscriber is a cursor into one log
 *   count         GET of the state (tgrun's extension, for timeout messages)
 *   is_cancel     drops the request's barrier wait or subscription
 *
 * Where it is better than the reference server: no message ceiling below
 * --max-message (default 64 MiB; past it close 1009 with the reason);
 * nothing is garbage-collected (every key expires by its TTL only); a
 * message that is not JSON closes with 1007 and a reason, one that is JSON
 * but not a request gets an error response (or, without an id to answer,
 * a close 1008 with the reason: `null` included); payloads pass through
 * byte-exact; a client that does not read is bounded: past --max-backlog
 * bytes waiting its deliveries stop and its requests are not read, and if
 * nothing drains for --stall seconds it is closed (1008, with the reason).
 *
 * Ownership: everything lives in one srv_t for the life of tg_serve_main;
 * a connection's state lives until its websocket's `closed` and its last
 * Redis request have both come back.
 */
#ifndef TG_SERVE_H
#define TG_SERVE_H

/* tgrun serve [options]: argv[0] is "serve".  Runs until SIGINT/SIGTERM;
 * the exit status (0 clean, 1 Redis was lost, 2 bad usage or
 * configuration, with one line saying what). */
int tg_serve_main(int argc, char **argv);

#endif
