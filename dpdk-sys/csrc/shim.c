/* Implementations of shim.h: each forwards to the DPDK static-inline function of the same name. */
#include "shim.h"

uint16_t anylb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}
uint16_t anylb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}
struct rte_mbuf *anylb_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
void anylb_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void anylb_pktmbuf_free_bulk(struct rte_mbuf **m, unsigned int n) { rte_pktmbuf_free_bulk(m, n); }
uint16_t anylb_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t anylb_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
int anylb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len) != NULL; }
int anylb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len) != NULL; }
int anylb_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len) != NULL; }
int anylb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len) == 0; }
int anylb_pktmbuf_linearize(struct rte_mbuf *m) { return rte_pktmbuf_linearize(m); }
void anylb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port) { m->port = port; }
unsigned int anylb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n) {
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}
unsigned int anylb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n) {
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}
unsigned int anylb_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned int anylb_lcore_id(void) { return rte_lcore_id(); }
int anylb_errno(void) { return rte_errno; }
uint64_t anylb_rdtsc(void) { return rte_rdtsc(); }
uint64_t anylb_tsc_hz(void) { return rte_get_tsc_hz(); }
uint64_t anylb_rss_ip_tcp_udp(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }
uint64_t anylb_rx_offload_checksum(void) { return RTE_ETH_RX_OFFLOAD_CHECKSUM; }
uint64_t anylb_tx_offload_checksum(void) {
    return RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
}
