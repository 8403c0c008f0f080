/* C shims over DPDK's static-inline functions, so that Rust can call them through bindgen. */
#ifndef ANYLB_DPDK_SHIM_H
#define ANYLB_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_cycles.h>
#include <rte_bus_vdev.h>

uint16_t anylb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t anylb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *anylb_pktmbuf_alloc(struct rte_mempool *mp);
void anylb_pktmbuf_free(struct rte_mbuf *m);
void anylb_pktmbuf_free_bulk(struct rte_mbuf **m, unsigned int n);
uint16_t anylb_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t anylb_pktmbuf_tailroom(const struct rte_mbuf *m);
int anylb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
int anylb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int anylb_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int anylb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
int anylb_pktmbuf_linearize(struct rte_mbuf *m);
void anylb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port);
unsigned int anylb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int anylb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int anylb_ring_count(const struct rte_ring *r);
unsigned int anylb_lcore_id(void);
int anylb_errno(void);
uint64_t anylb_rdtsc(void);
uint64_t anylb_tsc_hz(void);

/* Values of DPDK macros built with RTE_BIT64, which bindgen cannot evaluate. */
uint64_t anylb_rss_ip_tcp_udp(void);
uint64_t anylb_rx_offload_checksum(void);
uint64_t anylb_tx_offload_checksum(void);
#endif
