/**
 * DOC: variant 3 — mapping types and the Physical Address List (Jason
 * Gunthorpe, "[PATCH RFC 00/26] Add DMA-buf mapping types ...", 2026-02-17)
 *
 * World variant `dma-buf.pfn=pal`. Importer and exporter agree on a
 * mapping type at attach time:
 * - the importer lists the types it accepts (`DMA_BUF_IMAPPING_*`), the
 *   exporter the types it offers in preference order (`ops.mappingTypes`;
 *   an exporter unaware of types is wrapped as SGT when it has
 *   `map_dma_buf`, `dma_buf_sgt_exp_compat_match`);
 * - the first offered type the importer accepts wins
 *   (`attach->map_type`); `SGT_P2P` only matches an importer that accepts
 *   P2P (`allow_peer2peer`); no match is -EOPNOTSUPP;
 * - SGT attachments need a device (-EINVAL), PAL ones have none.
 *
 * The PAL type: exporter ops `map_phys(attach) -> dma_buf_phys_list` and
 * `unmap_phys(attach, list)`; importer calls {@linkcode dmaBufPalMapPhys}
 * (reservation lock held) and {@linkcode dmaBufPalUnmapPhys} (after which
 * it must not touch the addresses). The RFC exports `dma_buf_pal_map_phys`
 * for module "iommufd" only (`EXPORT_SYMBOL_FOR_MODULES`): any other
 * importer module fails to load with "Unknown symbol" (-ENOENT here). World
 * variant `dma-buf.pal.modules` (default "iommufd", comma separated) widens
 * that list, e.g. to let a KVM model import through PAL, which is exactly
 * what the review (König, 2026-04-13: "a pretty big NO-GO") contested.
 * Entries are assumed to be MMIO.
 *
 * Locking: `dma_buf_mapping_attach` WITHOUT the reservation lock;
 * `map_phys`/`unmap_phys` WITH it.
 *
 * @module
 */
import { type Device, KernelError } from "@dmalab/kernel";
import { type DmaBufAttachment, dmaBufDynamicAttach, dmaBufUnmapped } from "../buf/attachment.ts";
import { type DmaBuf, dmaBufPfnVariant } from "../buf/dma_buf.ts";
import { dmaBufAssertResvHeld } from "../buf/locking.ts";
import type { DmaBufAttachOps } from "../buf/ops.ts";
import type { DmaBufPhysList } from "./types.ts";

/** A mapping type of the RFC. */
export type DmaBufMappingType = "SGT" | "SGT_P2P" | "PAL";

const mapTypes = new WeakMap<DmaBufAttachment, DmaBufMappingType>();

/** `attach->map_type` (SGT for attachments made with plain `dma_buf_attach`). */
export function dmaBufAttachMapType(attach: DmaBufAttachment): DmaBufMappingType {
  return mapTypes.get(attach) ?? "SGT";
}

/** The types `dmabuf`'s exporter offers, in its preference order. */
export function dmaBufExporterMappingTypes(dmabuf: DmaBuf): readonly DmaBufMappingType[] {
  return dmabuf.ops.mappingTypes ?? (dmabuf.ops.mapDmaBuf ? ["SGT"] : []);
}

/** Options for {@linkcode dmaBufMappingAttach}. */
export interface DmaBufMappingAttachOptions {
  /** Importer module (PAL is restricted to "iommufd"). */
  importerModule?: string;
}

/**
 * `dma_buf_mapping_attach(dmabuf, dev, importer types, ops, priv)`.
 *
 * @example
 * ```ts ignore
 * // iommufd: physical addresses, no device
 * const attach = await dmaBufMappingAttach(buf, null, ["PAL"], { invalidateMappings: revoke }, area, { importerModule: "iommufd" });
 * await buf.resv.lock(null);
 * const list = dmaBufPalMapPhys(attach);
 * ```
 */
export async function dmaBufMappingAttach(
  dmabuf: DmaBuf,
  dev: Device | null,
  accept: readonly DmaBufMappingType[],
  importerOps: DmaBufAttachOps | null,
  importerPriv: unknown,
  options: DmaBufMappingAttachOptions = {},
): Promise<DmaBufAttachment> {
  const world = dmabuf.world;
  if (dmaBufPfnVariant(world) !== "pal") {
    throw new KernelError(
      "ENOSYS",
      "dma_buf_mapping_attach: not in this kernel (world variant dma-buf.pfn=pal)",
    );
  }
  const p2p = importerOps?.allowPeer2peer ?? false;
  let chosen: DmaBufMappingType | null = null;
  for (const t of dmaBufExporterMappingTypes(dmabuf)) {
    if (
      t === "SGT_P2P"
        ? (accept.includes("SGT_P2P") || accept.includes("SGT")) && p2p
        : accept.includes(t)
    ) {
      chosen = t;
      break;
    }
  }
  if (!chosen) {
    throw new KernelError(
      "EOPNOTSUPP",
      `dma_buf_mapping_attach: ${dmabuf.expName} offers [${
        dmaBufExporterMappingTypes(dmabuf).join(", ")
      }], importer accepts [${accept.join(", ")}]`,
    );
  }
  if (chosen !== "PAL" && !dev) {
    world.warnOn(true, "dma_buf_mapping_attach: an SGT mapping needs a device");
    throw new KernelError("EINVAL", "dma_buf_mapping_attach: SGT without a device");
  }
  const attach = await dmaBufDynamicAttach(
    dmabuf,
    chosen === "PAL" ? null : dev,
    importerOps,
    importerPriv,
    {
      importerModule: options.importerModule ?? "kernel",
    },
  );
  mapTypes.set(attach, chosen);
  return attach;
}

function palModules(attach: DmaBufAttachment): string[] {
  return attach.dmabuf.world.variant("dma-buf.pal.modules", "iommufd").split(",").map((s) =>
    s.trim()
  );
}

/** `dma_buf_pal_map_phys(attach)`: the exporter's physical address list; reservation lock held. */
export function dmaBufPalMapPhys(attach: DmaBufAttachment): DmaBufPhysList {
  const buf = attach.dmabuf;
  if (!palModules(attach).includes(attach.importerModule)) {
    throw new KernelError(
      "ENOENT",
      `${attach.importerModule}: Unknown symbol dma_buf_pal_map_phys (exported for ${
        palModules(attach).join(", ")
      } only)`,
    );
  }
  dmaBufAssertResvHeld(buf, "dma_buf_pal_map_phys");
  if (dmaBufAttachMapType(attach) !== "PAL" || !buf.ops.mapPhys) {
    buf.world.warnOn(true, `dma_buf_pal_map_phys: ${attach} is not a PAL attachment`);
    throw new KernelError("EINVAL", "dma_buf_pal_map_phys: attachment did not match PAL");
  }
  const list = buf.ops.mapPhys(attach);
  attach.physMappings++;
  buf.outstandingMappings++;
  return list;
}

/** `dma_buf_pal_unmap_phys(attach, list)`: reservation lock held; the importer is done with the addresses. */
export function dmaBufPalUnmapPhys(attach: DmaBufAttachment, list: DmaBufPhysList): void {
  const buf = attach.dmabuf;
  dmaBufAssertResvHeld(buf, "dma_buf_pal_unmap_phys");
  if (attach.physMappings <= 0) {
    buf.world.bug("WARN", `WARNING: dma_buf_pal_unmap_phys: ${attach} has no PAL mapping`);
    return;
  }
  attach.physMappings--;
  buf.outstandingMappings--;
  buf.ops.unmapPhys?.(attach, list);
  dmaBufUnmapped(buf);
}
