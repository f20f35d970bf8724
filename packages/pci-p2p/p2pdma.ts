/**
 * DOC: PCI peer-to-peer DMA (drivers/pci/p2pdma.c)
 *
 * Providers (one per memory BAR, `struct p2pdma_provider`), the per-device
 * `struct pci_p2pdma` with its map-type cache (an xarray keyed by the
 * client's `(domain << 16) | bus << 8 | devfn`) and optional gen_pool of
 * donated BAR memory, and the decision every P2P mapping depends on:
 * `calc_map_type_and_dist`, with the upstream walks, ACS redirect detection
 * on both chains, the `pci=disable_acs_redir=` hint, `cpu_supports_p2pdma()`
 * and the host-bridge whitelist (`REQ_SAME_HOST_BRIDGE`, "first device on
 * the root bus"). Warnings go to the world's dmesg with the kernel's texts.
 *
 * Locking: the kernel reads `pdev->p2pdma` under RCU and stores cache entries
 * with GFP_ATOMIC, so the distance/map-type functions are callable in atomic
 * context: all are synchronous here. `pci_p2pdma_add_resource` and
 * `pcim_p2pdma_init` may sleep in the kernel (devm allocations) but touch no
 * scheduler state, so they are synchronous too.
 *
 * @module
 */
import { type Device, type DevPagemap, type Kernel, KernelError } from "@dmalab/kernel";
import {
  PAGE_SHIFT,
  PCI_ACS_CR,
  PCI_ACS_EC,
  PCI_ACS_RR,
  PCI_STD_NUM_BARS,
  PciP2pdmaMapType,
} from "./constants.ts";
import { devIsPci, hex, type PciDev, type PciHostBridge, pciUpstreamBridge } from "./fabric.ts";
import { cpuSupportsP2pdma, pciFabric } from "./machine.ts";
import { GenPool } from "./gen_pool.ts";
import { formatBar } from "./builder.ts";

/** `struct p2pdma_provider`: a BAR's MMIO usable for P2P. */
export interface P2pdmaProvider {
  /** The device owning the BAR. */
  readonly owner: PciDev;
  /** BAR index. */
  readonly bar: number;
  /** Bus address minus CPU physical address. */
  readonly busOffset: bigint;
}

/** `struct pci_p2pdma`. */
export class PciP2pdma {
  /** Map-type cache (`map_types` xarray). */
  readonly mapTypes: Map<number, PciP2pdmaMapType> = new Map();
  /** Providers per BAR (null for non-memory BARs). */
  readonly mem: (P2pdmaProvider | null)[];
  /** Donated memory pool, or null. */
  pool: GenPool | null = null;
  /** `p2pmem_published`. */
  published = false;
  /** Outstanding allocations (the pgmap percpu refs). */
  allocRefs = 0;
  /** Donated ranges `[start, end]` (CPU physical), for `is_pci_p2pdma_page`. */
  readonly ranges: { start: bigint; end: bigint; provider: P2pdmaProvider; pgmap: DevPagemap }[] =
    [];

  /** Built by {@linkcode pcimP2pdmaInit}. */
  constructor(mem: (P2pdmaProvider | null)[]) {
    this.mem = mem;
  }
}

/** A map type and distance. */
export interface MapTypeAndDist {
  /** Map type. */
  readonly mapType: PciP2pdmaMapType;
  /** Distance (always computed; meaningful unless NOT_SUPPORTED). */
  readonly dist: number;
}

function pciWarn(dev: Device, msg: string): void {
  dev.world.dmesg.printk(
    "warn",
    `${dev.driver ?? dev.bus?.name ?? ""} ${dev.name}: ${msg}`.trimStart(),
  );
}

function pciInfo(dev: Device, msg: string): void {
  dev.world.dmesg.printk(
    "info",
    `${dev.driver ?? dev.bus?.name ?? ""} ${dev.name}: ${msg}`.trimStart(),
  );
}

/**
 * `pcim_p2pdma_init`: creates the device's P2PDMA state and one provider per
 * memory BAR. Idempotent. -EOPNOTSUPP when the BARs are not mappable.
 */
export function pcimP2pdmaInit(pdev: PciDev): void {
  if (pdev.nonMappableBars) {
    throw new KernelError("EOPNOTSUPP", `pcim_p2pdma_init: ${pdev.name} has non-mappable BARs`);
  }
  if (pdev.p2pdma) return;
  const mem: (P2pdmaProvider | null)[] = [];
  for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
    const bar = pdev.bars[i];
    mem.push(bar && bar.mem ? { owner: pdev, bar: i, busOffset: bar.busOffset } : null);
  }
  pdev.p2pdma = new PciP2pdma(mem);
}

/**
 * `pcim_p2pdma_provider(pdev, bar)`: the provider of a memory BAR; null for
 * a non-memory BAR or non-mappable device; WARN and null when
 * `pcim_p2pdma_init` was not called.
 */
export function pcimP2pdmaProvider(pdev: PciDev, bar: number): P2pdmaProvider | null {
  const b = pdev.bars[bar];
  if (!b || !b.mem || pdev.nonMappableBars) return null;
  const p2p = pdev.p2pdma;
  if (!p2p) {
    pdev.world.warnOn(
      true,
      `pcim_p2pdma_provider: ${pdev.name}: pcim_p2pdma_init() was not called (drivers/pci/p2pdma.c)`,
    );
    return null;
  }
  return p2p.mem[bar] ?? null;
}

/**
 * `pci_p2pdma_add_resource(pdev, bar, size, offset)`: donates part of a BAR
 * (size 0: the rest of it) to the device's p2pmem pool. The pool stores the
 * bus address as each chunk's "physical" address.
 */
export function pciP2pdmaAddResource(pdev: PciDev, bar: number, size = 0n, offset = 0n): void {
  const b = pdev.bars[bar];
  const fn = "pci_p2pdma_add_resource";
  if (!b || !b.mem) {
    throw new KernelError("EINVAL", `${fn}: ${pdev.name} BAR ${bar} is not a memory BAR`);
  }
  if (offset >= b.size) {
    throw new KernelError(
      "EINVAL",
      `${fn}: ${pdev.name} BAR ${bar}: offset 0x${hex(offset, 1)} >= BAR length`,
    );
  }
  if (size === 0n) size = b.size - offset;
  if (size + offset > b.size) {
    throw new KernelError("EINVAL", `${fn}: ${pdev.name} BAR ${bar}: size + offset beyond the BAR`);
  }
  if (b.start === null) {
    throw new KernelError("EINVAL", `${fn}: ${pdev.name} BAR ${bar} ${formatBar(b)} is unassigned`);
  }
  pcimP2pdmaInit(pdev);
  const p2p = pdev.p2pdma!;
  if (!p2p.pool) p2p.pool = new GenPool(PAGE_SHIFT, pdev.numaNode);
  const mem = pcimP2pdmaProvider(pdev, bar);
  if (!mem) throw new KernelError("EINVAL", `${fn}: ${pdev.name} BAR ${bar} has no provider`);
  const start = b.start + offset;
  const end = start + size - 1n;
  // devm_memremap_pages: ZONE_DEVICE pages of type MEMORY_DEVICE_PCI_P2PDMA
  const pgmap = pdev.world.mem.memremapPages({ type: "pci_p2pdma", start, size, owner: mem });
  p2p.pool.add(start, b.start + b.busOffset + offset, size);
  p2p.ranges.push({ start, end, provider: mem, pgmap });
  pciInfo(pdev, `added peer-to-peer DMA memory 0x${hex(start, 1)}-0x${hex(end, 1)}`);
}

/** `pci_bridge_has_acs_redir`: ACS capability with RR, CR or EC enabled. */
export function pciBridgeHasAcsRedir(pdev: PciDev): boolean {
  return pdev.hasAcs && (pdev.acsCtrl & (PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC)) !== 0;
}

/** One entry of `pci_p2pdma_whitelist[]`. */
export interface P2pdmaWhitelistEntry {
  /** Vendor id. */
  readonly vendor: number;
  /** Device id, or -1 for `PCI_ANY_ID`. */
  readonly device: number;
  /** `REQ_SAME_HOST_BRIDGE`. */
  readonly reqSameHostBridge: boolean;
}

const W = (vendor: number, device: number, same = false): P2pdmaWhitelistEntry => ({
  vendor,
  device,
  reqSameHostBridge: same,
});

/** `pci_p2pdma_whitelist[]` as of the PCI maintainer tree (cd2698d7). */
export const PCI_P2PDMA_WHITELIST: readonly P2pdmaWhitelistEntry[] = [
  W(0x8086, 0x3c00, true),
  W(0x8086, 0x3c01, true),
  W(0x8086, 0x2f00, true),
  W(0x8086, 0x2f01, true),
  W(0x8086, 0x2030),
  W(0x8086, 0x2031),
  W(0x8086, 0x2032),
  W(0x8086, 0x2033),
  W(0x8086, 0x2020),
  W(0x8086, 0x09a2),
  W(0x8086, 0x0b25), // DSA SPR0
  W(0x8086, 0x0cfe), // IAX SPR0
  W(0x8086, 0x11fb), // DSA GNRD
  W(0x8086, 0x1212), // DSA DMR
  W(0x8086, 0x1216), // IAA DMR
  W(0x8086, 0x4940), // QAT 4XXX
  W(0x8086, 0x4942), // QAT 401XX
  W(0x8086, 0x4944), // QAT 402XX
  W(0x8086, 0x4946), // QAT 420XX
  W(0x8086, 0x4948), // QAT 6XXX
  W(0x1ae0, -1), // Google SoCs
  W(0x10de, 0x2f95),
  W(0x10de, 0x2f96),
  W(0x10de, 0x2f97),
  W(0x10de, 0x2f98),
  W(0x1d17, 0x1003, true),
  W(0x1d17, 0x1005, true),
  W(0x1d17, 0x1006, true),
  W(0x1d17, 0x1007, true),
  W(0x1d17, 0x1008),
];

/**
 * `pci_host_bridge_dev`: the first function on the host's root bus if it is
 * devfn 00.0 or a Root Port, else null.
 */
export function pciHostBridgeDev(host: PciHostBridge): PciDev | null {
  const root = host.bus.devices[0];
  if (!root) return null;
  if (root.devfn === 0) return root;
  if (root.type === "root_port") return root;
  return null;
}

const whitelistMemo = new WeakMap<
  PciHostBridge,
  { root: PciDev | null; entry: P2pdmaWhitelistEntry | null }
>();

/** The host's first device and its whitelist entry (the hierarchy is fixed after enumeration). */
function whitelistLookup(
  host: PciHostBridge,
): { root: PciDev | null; entry: P2pdmaWhitelistEntry | null } {
  let m = whitelistMemo.get(host);
  if (!m) {
    const root = pciHostBridgeDev(host);
    const entry = root === null
      ? null
      : PCI_P2PDMA_WHITELIST.filter((e) => !(rdmaTree(root.world) && e.vendor === 0x1d17)).find((
        e,
      ) => root.vendor === e.vendor && (e.device === -1 || root.deviceId === e.device)) ?? null;
    m = { root, entry };
    if (root?.registered) whitelistMemo.set(host, m);
  }
  return m;
}

/** `__host_bridge_whitelist(host, same_host_bridge, warn)`. */
export function hostBridgeWhitelistOne(
  host: PciHostBridge,
  sameHostBridge: boolean,
  warn: boolean,
): boolean {
  const { root, entry } = whitelistLookup(host);
  if (!root) return false;
  if (entry) return !(entry.reqSameHostBridge && !sameHostBridge);
  if (warn) {
    pciWarn(
      root,
      `Host bridge not in P2PDMA whitelist: ${hex(root.vendor, 4)}:${hex(root.deviceId, 4)}`,
    );
  }
  return false;
}

/** `host_bridge_whitelist(a, b, warn)`. */
export function hostBridgeWhitelist(a: PciDev, b: PciDev, warn: boolean): boolean {
  const ha = a.host;
  const hb = b.host;
  if (ha === hb) return hostBridgeWhitelistOne(ha, true, warn);
  return hostBridgeWhitelistOne(ha, false, warn) && hostBridgeWhitelistOne(hb, false, warn);
}

/**
 * Which copy of drivers/pci/p2pdma.c the world runs: `world.variant("pci-p2pdma",
 * "pci")`. "pci" is the PCI maintainer tree (cd2698d7); "rdma" is the
 * linux-rdma copy (04673b71): no Zhaoxin whitelist entries, and the
 * whitelist warning follows `verbose` instead of "ACS redirected".
 */
export function rdmaTree(world: Kernel): boolean {
  return world.variant("pci-p2pdma", "pci") === "rdma";
}

/** `map_types_idx(client)`. */
export function mapTypesIdx(client: PciDev): number {
  return client.domain * 0x10000 + client.devId;
}

/** Counts how often the whitelist was consulted (tests use it; not kernel state). */
export const whitelistProbe: { calls: number } = { calls: 0 };

/**
 * `calc_map_type_and_dist(provider, client, &dist, verbose)`: the P2P map
 * type between two PCI functions and their distance, cached in the
 * provider's `map_types` when the provider has P2PDMA state.
 */
export function calcMapTypeAndDist(
  provider: PciDev,
  client: PciDev,
  verbose: boolean,
): MapTypeAndDist {
  let mapType: PciP2pdmaMapType = PciP2pdmaMapType.THRU_HOST_BRIDGE;
  let acsRedirects = false;
  const acsList = { buf: "", overflow: false };
  let acsCnt = 0;
  let distA = 0;
  let distB = 0;
  let a: PciDev | null = provider;
  let common: PciDev | null = null;
  outer: while (a) {
    distB = 0;
    if (pciBridgeHasAcsRedir(a)) {
      seqBufPrintf(acsList, `${a.name};`);
      acsCnt++;
    }
    let bb: PciDev | null = client;
    while (bb) {
      if (a === bb) {
        common = a;
        break outer;
      }
      bb = pciUpstreamBridge(bb);
      distB++;
    }
    a = pciUpstreamBridge(a);
    distA++;
  }
  const dist = distA + distB;
  let done = false;
  if (common) {
    let bb: PciDev | null = client;
    while (bb) {
      if (bb === common) break;
      if (pciBridgeHasAcsRedir(bb)) {
        seqBufPrintf(acsList, `${bb.name};`);
        acsCnt++;
      }
      bb = pciUpstreamBridge(bb);
    }
    if (acsCnt === 0) {
      mapType = PciP2pdmaMapType.BUS_ADDR;
      done = true;
    } else {
      if (verbose) {
        // the kernel zeroes buffer[len - 1]: the final ';' unless the 128-byte
        // seq_buf overflowed (then len is past the end and the truncated text stays)
        const list = acsList.overflow ? acsList.buf : acsList.buf.slice(0, -1);
        pciWarn(client, `ACS redirect is set between the client and provider (${provider.name})`);
        pciWarn(
          client,
          `to disable ACS redirect for this path, add the kernel parameter: pci=disable_acs_redir=${list}`,
        );
      }
      acsRedirects = true;
    }
  }
  if (!done) {
    if (!cpuSupportsP2pdma(provider.world)) {
      whitelistProbe.calls++;
      // the PCI tree warns about an unlisted host bridge only when ACS redirected
      // the path; the rdma tree copy warns whenever the caller is verbose
      const warn = rdmaTree(provider.world) ? verbose : acsRedirects;
      if (!hostBridgeWhitelist(provider, client, warn)) {
        if (verbose) {
          pciWarn(
            client,
            `cannot be used for peer-to-peer DMA as the client and provider (${provider.name}) do not share an upstream bridge or whitelisted host bridge`,
          );
        }
        mapType = PciP2pdmaMapType.NOT_SUPPORTED;
      }
    }
  }
  provider.p2pdma?.mapTypes.set(mapTypesIdx(client), mapType);
  return { mapType, dist };
}

/**
 * `seq_buf_printf` into the 128-byte buffer of `calc_map_type_and_dist`: text
 * that does not fit is cut at 127 bytes (vsnprintf) and the buffer is marked
 * overflowed; later prints add nothing.
 */
function seqBufPrintf(sb: { buf: string; overflow: boolean }, s: string): void {
  if (sb.overflow) return;
  if (sb.buf.length + s.length < 128) {
    sb.buf += s;
    return;
  }
  sb.buf = (sb.buf + s).slice(0, 127);
  sb.overflow = true;
}

/** `find_parent_pci_dev`: `dev` or its nearest PCI ancestor. */
export function findParentPciDev(dev: Device): PciDev | null {
  let d: Device | null = dev;
  while (d) {
    if (devIsPci(d)) return d;
    d = d.parent;
  }
  return null;
}

/**
 * `pci_p2pdma_distance_many(provider, clients, num_clients, verbose)`: -1
 * when there are no clients, a client is not PCI, or any client is
 * NOT_SUPPORTED; otherwise the sum of the distances.
 */
export function pciP2pdmaDistanceMany(
  provider: PciDev,
  clients: readonly Device[],
  verbose: boolean,
): number {
  if (clients.length === 0) return -1;
  let notSupported = false;
  let total = 0;
  for (const c of clients) {
    const pc = findParentPciDev(c);
    if (!pc) {
      if (verbose) pciWarn(c, "cannot be used for peer-to-peer DMA as it is not a PCI device");
      return -1;
    }
    const { mapType, dist } = calcMapTypeAndDist(provider, pc, verbose);
    if (mapType === PciP2pdmaMapType.NOT_SUPPORTED) notSupported = true;
    if (notSupported && !verbose) break;
    total += dist;
  }
  return notSupported ? -1 : total;
}

/** `pci_p2pdma_distance(provider, client, verbose)`. */
export function pciP2pdmaDistance(provider: PciDev, client: Device, verbose: boolean): number {
  return pciP2pdmaDistanceMany(provider, [client], verbose);
}

/**
 * `pci_p2pdma_map_type(provider, dev)`: NOT_SUPPORTED when the provider's
 * device has no P2PDMA state or `dev` is not PCI; else the cached type,
 * computed verbosely on a miss.
 */
export function pciP2pdmaMapType(provider: P2pdmaProvider, dev: Device): PciP2pdmaMapType {
  const pdev = provider.owner;
  const p2p = pdev.p2pdma;
  if (!p2p) return PciP2pdmaMapType.NOT_SUPPORTED;
  if (!devIsPci(dev)) return PciP2pdmaMapType.NOT_SUPPORTED;
  const t = p2p.mapTypes.get(mapTypesIdx(dev)) ?? PciP2pdmaMapType.UNKNOWN;
  if (t === PciP2pdmaMapType.UNKNOWN) return calcMapTypeAndDist(pdev, dev, true).mapType;
  return t;
}

/** `pci_p2pdma_bus_addr_map(provider, paddr)`: the PCI bus address of `paddr`. */
export function pciP2pdmaBusAddrMap(provider: P2pdmaProvider, paddr: bigint): bigint {
  return paddr + provider.busOffset;
}

/** `pci_has_p2pmem`: the device has P2PDMA state and published it (a pool is not checked). */
export function pciHasP2pmem(pdev: PciDev): boolean {
  return pdev.p2pdma !== null && pdev.p2pdma.published;
}

/** `pci_p2pmem_publish(pdev, publish)`. */
export function pciP2pmemPublish(pdev: PciDev, publish: boolean): void {
  if (pdev.p2pdma) pdev.p2pdma.published = publish;
}

/**
 * `pci_p2pmem_find_many(clients, num_clients)`: among published providers,
 * those at the smallest non-negative distance to all clients; one is picked
 * at random (deterministic per world seed). Null when none fits.
 */
export function pciP2pmemFindMany(clients: readonly Device[]): PciDev | null {
  if (clients.length === 0) return null;
  const world = clients[0]!.world;
  const fabric = pciFabric(world);
  const maxDevs = 4096 / 8;
  let closest = Number.MAX_SAFE_INTEGER;
  let best: PciDev[] = [];
  for (const pdev of fabric.devices) {
    if (!pdev.registered || !pciHasP2pmem(pdev)) continue;
    const d = pciP2pdmaDistanceMany(pdev, clients, false);
    if (d < 0 || d > closest) continue;
    if (d === closest && best.length >= maxDevs) continue;
    if (d < closest) {
      best = [];
      closest = d;
    }
    best.push(pdev);
  }
  if (best.length === 0) return null;
  return best[fabric.randomBelow(best.length)]!;
}

/** `pci_p2pmem_find(client)`. */
export function pciP2pmemFind(client: Device): PciDev | null {
  return pciP2pmemFindMany([client]);
}

/**
 * `pci_alloc_p2pmem(pdev, size)`: allocates from the pool; returns the
 * address (the CPU physical address of the ZONE_DEVICE range stands in for
 * the kernel virtual address) or null.
 */
export function pciAllocP2pmem(pdev: PciDev, size: bigint): bigint | null {
  const p2p = pdev.p2pdma;
  if (!p2p || !p2p.pool) return null;
  const addr = p2p.pool.alloc(size);
  if (addr !== null) p2p.allocRefs++;
  return addr;
}

/** `pci_free_p2pmem(pdev, addr, size)`; a range the pool does not own is a BUG. */
export function pciFreeP2pmem(pdev: PciDev, addr: bigint, size: bigint): void {
  const p2p = pdev.p2pdma;
  if (!p2p || !p2p.pool || !p2p.pool.free(addr, size)) {
    pdev.world.bug(
      "BUG",
      `kernel BUG at lib/genalloc.c: pci_free_p2pmem: ${pdev.name}: 0x${hex(addr, 1)}+0x${
        hex(size, 1)
      } was not allocated from this pool`,
    );
    return;
  }
  p2p.allocRefs--;
}

/** `pci_p2pmem_virt_to_bus(pdev, addr)`: the bus address, 0 when unknown. */
export function pciP2pmemVirtToBus(pdev: PciDev, addr: bigint | null): bigint {
  if (addr === null || !pdev.p2pdma?.pool) return 0n;
  return pdev.p2pdma.pool.virtToPhys(addr) ?? 0n;
}

/** sysfs `p2pmem/{size,available,published}` of a device, or null when absent. */
export function p2pmemSysfs(
  pdev: PciDev,
): { size: bigint; available: bigint; published: boolean } | null {
  const p = pdev.p2pdma;
  if (!p || !p.pool) return null;
  return { size: p.pool.size(), available: p.pool.avail(), published: p.published };
}

/**
 * The provider owning CPU physical address `paddr` (`is_pci_p2pdma_page` +
 * `page->pgmap`), or null for ordinary memory.
 */
export function p2pdmaProviderOf(pdev: PciDev, paddr: bigint): P2pdmaProvider | null {
  for (const r of pdev.p2pdma?.ranges ?? []) {
    if (paddr >= r.start && paddr <= r.end) return r.provider;
  }
  return null;
}

/** `struct pci_p2pdma_map_state`: caches the map type per provider across pages. */
export class P2pdmaMapState {
  /** Last provider seen. */
  mem: P2pdmaProvider | null = null;
  /** Its map type. */
  map: PciP2pdmaMapType = PciP2pdmaMapType.UNKNOWN;

  /**
   * `pci_p2pdma_state(state, dev, page)`: NONE for a non-P2P page
   * (`provider` null), else the map type of `provider` towards `dev`.
   */
  state(dev: Device, provider: P2pdmaProvider | null): PciP2pdmaMapType {
    if (!provider) return PciP2pdmaMapType.NONE;
    if (provider !== this.mem) {
      this.mem = provider;
      this.map = pciP2pdmaMapType(provider, dev);
    }
    return this.map;
  }
}

/**
 * `pci_p2pdma_release` and the devres actions of `pci_p2pdma_add_resource`
 * (driver unbind): `memunmap_pages` of each donated range (sleeps until its
 * pages are free), then the pool and the P2PDMA state go. p2pmem still
 * allocated would keep the page-map references forever (unbind would hang):
 * reported as a BUG before anything is torn down.
 */
export async function pciP2pdmaRelease(pdev: PciDev): Promise<void> {
  const p = pdev.p2pdma;
  if (!p) return;
  if (p.allocRefs > 0) {
    pdev.world.bug(
      "BUG",
      `pci_p2pdma_release: ${pdev.name}: ${p.allocRefs} p2pmem allocations still outstanding`,
    );
    return;
  }
  for (const r of p.ranges) await pdev.world.mem.memunmapPages(r.pgmap);
  pdev.p2pdma = null;
}

/** Result of {@linkcode pciP2pdmaEnableStore}. */
export interface P2pdmaEnable {
  /** Use P2P memory. */
  readonly use: boolean;
  /** The chosen provider, or null for "any" / off. */
  readonly dev: PciDev | null;
}

function kstrtobool(s: string): boolean | null {
  const c0 = s[0];
  if (c0 === "y" || c0 === "Y" || c0 === "1") return true;
  if (c0 === "n" || c0 === "N" || c0 === "0") return false;
  if (c0 === "o" || c0 === "O") {
    const c1 = s[1];
    if (c1 === "n" || c1 === "N") return true;
    if (c1 === "f" || c1 === "F") return false;
  }
  return null;
}

/**
 * `pci_p2pdma_enable_store(page, &dev, &use)`: a configfs/sysfs knob (nvmet
 * `p2pmem`). A PCI device name selects that provider (-ENODEV when it has
 * no published p2pmem); otherwise a boolean, where "0"/"1" must be exactly
 * one character so "0000:01:00.1" of a missing device is not read as 0.
 */
export function pciP2pdmaEnableStore(world: Kernel, page: string): P2pdmaEnable {
  const name = page.endsWith("\n") ? page.slice(0, -1) : page;
  const dev = pciFabric(world).get(name);
  if (dev && dev.name === name) {
    if (!pciHasP2pmem(dev)) {
      world.dmesg.printk("err", `pci ${dev.name}: PCI device has no peer-to-peer memory: ${page}`);
      throw new KernelError(
        "ENODEV",
        `pci_p2pdma_enable_store: ${dev.name} has no peer-to-peer memory`,
      );
    }
    return { use: true, dev };
  }
  const c1 = page.charCodeAt(1);
  const oneChar = (page[0] === "0" || page[0] === "1") &&
    !(c1 < 0x20 || c1 === 0x7f || Number.isNaN(c1));
  if (!oneChar) {
    const b = kstrtobool(page);
    if (b !== null) return { use: b, dev: null };
  }
  world.dmesg.printk("err", `pci-p2pdma: No such PCI device: ${page.split("\n")[0]}`);
  throw new KernelError(
    "ENODEV",
    `pci_p2pdma_enable_store: no such PCI device ${JSON.stringify(name)}`,
  );
}

/** `pci_p2pdma_enable_show`: "0", "1" or the provider's name, with a newline. */
export function pciP2pdmaEnableShow(e: P2pdmaEnable): string {
  if (!e.use) return "0\n";
  if (!e.dev) return "1\n";
  return `${e.dev.name}\n`;
}
