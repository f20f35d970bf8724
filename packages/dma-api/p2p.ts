/**
 * DOC: P2P state during mapping
 *
 * `pci_p2pdma_state()` as the mapping code uses it: for each piece of memory
 * the provider (the BAR owner, found from the page's `pgmap` in the kernel;
 * here from the entry or by address among the fabric's donated P2P ranges)
 * and the cached map type towards the mapping device. `NONE` for ordinary
 * memory.
 *
 * Locking: none (state is on the caller's stack).
 *
 * @module
 */
import type { Device, Kernel } from "@dmalab/kernel";
import {
  type P2pdmaMapState,
  type P2pdmaProvider,
  p2pdmaProviderOf,
  pciFabric,
  PciP2pdmaMapType,
} from "@dmalab/pci-p2p";

/** The P2P provider owning CPU physical address `phys`, or null (`is_pci_p2pdma_page`). */
export function p2pProviderOfPhys(world: Kernel, phys: number): P2pdmaProvider | null {
  if (!world.hasExt("pci-p2p")) return null;
  for (const d of pciFabric(world).devices) {
    if (!d.p2pdma) continue;
    const p = p2pdmaProviderOf(d, BigInt(phys));
    if (p) return p;
  }
  return null;
}

/** `pci_p2pdma_state(state, dev, page)` for an explicit or looked-up provider. */
export function p2pdmaState(
  state: P2pdmaMapState,
  dev: Device,
  phys: number,
  provider: P2pdmaProvider | null | undefined,
): PciP2pdmaMapType {
  const p = provider === undefined ? p2pProviderOfPhys(dev.world, phys) : provider;
  if (!p) return PciP2pdmaMapType.NONE;
  return state.state(dev, p);
}
