/**
 * DOC: the virtio devices of app 4 (a VMM, a virtio-gpu-like exporter, a
 * virtio-video-like importer)
 *
 * - {@linkcode VirtioHost}: the VMM side. Each command a guest driver
 *   queues is handled by a host task after `latencyNs` of virtual time
 *   (the virtqueue round trip) and completes the driver's
 *   {@linkcode Completion}. The host keeps the cross-device object table
 *   (virtio "shared objects"): UUID to the resource's guest pages, so one
 *   virtio device's backend can reach a buffer another device exported.
 * - {@linkcode VirtioGpu}: creates resources (`RESOURCE_CREATE_2D` +
 *   `ATTACH_BACKING`: guest pages handed to the host) and exports them with
 *   `virtio_dma_buf_export` (ops with `virtio_dma_buf_attach`,
 *   `device_attach`, and `get_uuid`, which sends `RESOURCE_ASSIGN_UUID`
 *   once and sleeps until the host answered, as virtio-gpu's
 *   `virtgpu_virtio_get_uuid` waits for the response). Mapping for an
 *   importer is the ordinary sg path (`dma_map_sgtable`).
 * - {@linkcode VirtioVideo}: imports a dma-buf fd. A virtio dma-buf
 *   (`is_virtio_dma_buf`) is referenced by UUID, with no guest mapping at
 *   all; anything else falls back to attaching and mapping it and sending
 *   the guest addresses, as virtio-video does for non-virtio buffers.
 *
 * Locking: `get_uuid` takes no dma-buf lock and may sleep (the core calls
 * it unlocked); `map_dma_buf` runs under the reservation lock (the core
 * takes it); host commands sleep only on completions.
 *
 * @module
 */
import {
  Completion,
  Device,
  dmaBitMask,
  type Kernel,
  KernelError,
  type Page,
} from "@dmalab/kernel";
import {
  type DmaBuf,
  dmaBufAttach,
  type DmaBufAttachment,
  dmaMapSgtable,
  dmaUnmapSgtable,
  isVirtioDmaBuf,
  Scatterlist,
  SgTable,
  type Uuid,
  virtioDmaBufAttach,
  virtioDmaBufExport,
  virtioDmaBufGetUuid,
} from "@dmalab/dma-buf";

const PAGE = 4096;

/** A guest buffer as the host sees it: the guest pages backing it. */
export interface HostObject {
  /** Resource id on the owning device. */
  resourceId: number;
  /** Owning device. */
  owner: string;
  /** Backing pfns (guest pages), in order. */
  pfns: number[];
  /** Size in bytes. */
  size: number;
}

/** The VMM: command handling and the shared object table. */
export class VirtioHost {
  /** The world. */
  readonly world: Kernel;
  /** Virtqueue round trip, ns. */
  readonly latencyNs: number;
  /** Shared objects by UUID (hex). */
  readonly objects: Map<string, HostObject> = new Map();
  /** Resources by `owner:id`. */
  readonly resources: Map<string, HostObject> = new Map();
  /** Commands handled, by name. */
  readonly commands: Record<string, number> = {};
  /** Called when a command completes (the app records it as a span). */
  onCommand: ((dev: string, cmd: string, startNs: number, endNs: number) => void) | null = null;
  #uuidSeq = 0;

  /** A VMM for `world`. */
  constructor(world: Kernel, latencyNs = 20_000) {
    this.world = world;
    this.latencyNs = latencyNs;
  }

  /**
   * Queues `cmd` from `dev` and sleeps until the host answered; the host
   * task runs `handle` after the round trip and its result is returned.
   */
  async command<T>(dev: Device, cmd: string, handle: () => T): Promise<T> {
    const done = new Completion(this.world.sched, `${dev.name}:${cmd}`);
    let out!: T;
    let err: unknown = null;
    const t0 = this.world.sched.now;
    this.world.spawn(`vmm:${dev.name}`, async () => {
      await this.world.sched.sleepNs(this.latencyNs);
      try {
        out = handle();
      } catch (e) {
        err = e;
      }
      this.commands[cmd] = (this.commands[cmd] ?? 0) + 1;
      this.onCommand?.(dev.name, cmd, t0, this.world.sched.now);
      done.complete();
    });
    await done.waitForCompletion();
    if (err) throw err;
    return out;
  }

  /** Assigns a fresh UUID to a resource (deterministic per world). */
  assignUuid(obj: HostObject): Uuid {
    const uuid = new Uint8Array(16);
    const n = ++this.#uuidSeq;
    uuid.set([0x64, 0x6d, 0x61, 0x6c, 0x61, 0x62, 0x40, 0x80]); // "dmalab", version 4, variant
    new DataView(uuid.buffer).setUint32(12, (obj.resourceId << 8) | n);
    this.objects.set(uuidHex(uuid), obj);
    return uuid;
  }

  /** Reads `len` bytes of a host object at `offset` (the backend touching guest pages). */
  readObject(obj: HostObject, offset: number, len: number): Uint8Array {
    return readPages(this.world, obj.pfns, offset, len);
  }

  /** Writes bytes into a host object at `offset`. */
  writeObject(obj: HostObject, offset: number, bytes: Uint8Array): void {
    writePages(this.world, obj.pfns, offset, bytes);
  }
}

/** A UUID as 32 hex digits. */
export function uuidHex(u: Uuid): string {
  return [...u].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads bytes from a list of 4 KiB pfns. */
export function readPages(world: Kernel, pfns: readonly number[], offset: number, len: number) {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const off = offset + done;
    const n = Math.min(PAGE - (off % PAGE), len - done);
    out.set(world.mem.read(pfns[Math.floor(off / PAGE)]! * PAGE + (off % PAGE), n), done);
    done += n;
  }
  return out;
}

/** Writes bytes into a list of 4 KiB pfns. */
export function writePages(
  world: Kernel,
  pfns: readonly number[],
  offset: number,
  bytes: Uint8Array,
): void {
  let done = 0;
  while (done < bytes.length) {
    const off = offset + done;
    const n = Math.min(PAGE - (off % PAGE), bytes.length - done);
    world.mem.write(
      pfns[Math.floor(off / PAGE)]! * PAGE + (off % PAGE),
      bytes.subarray(done, done + n),
    );
    done += n;
  }
}

/** A virtio-gpu resource. */
export interface GpuResource {
  /** Resource id. */
  id: number;
  /** Host view. */
  obj: HostObject;
  /** Guest pages. */
  pages: Page[];
  /** UUID once assigned. */
  uuid: Uuid | null;
  /** Sleepers on the UUID (the first asks the host, the others wait). */
  uuidPending: Promise<Uuid> | null;
  /** `device_attach` calls seen. */
  deviceAttaches: number;
}

/** The virtio-gpu-like exporter. */
export class VirtioGpu {
  /** Its device. */
  readonly dev: Device;
  /** The VMM. */
  readonly host: VirtioHost;
  #ids = 0;

  /** A virtio-gpu device `name` on `host`. */
  constructor(host: VirtioHost, name = "virtio0") {
    this.host = host;
    this.dev = new Device(host.world, name, {
      dmaMask: dmaBitMask(64),
      coherentDmaMask: dmaBitMask(64),
    });
  }

  /** `RESOURCE_CREATE_2D` + `RESOURCE_ATTACH_BACKING`: a resource of `size` bytes. */
  async createResource(size: number): Promise<GpuResource> {
    const world = this.host.world;
    const pages: Page[] = [];
    for (let i = 0; i < Math.ceil(size / PAGE); i++) {
      const p = world.mem.allocPages(0, { zero: true });
      if (!p) {
        pages.forEach((q) => world.mem.freePages(q, 0));
        throw new KernelError("ENOMEM", "virtio-gpu: out of memory for resource backing");
      }
      pages.push(p);
    }
    const id = ++this.#ids;
    const obj: HostObject = {
      resourceId: id,
      owner: this.dev.name,
      pfns: pages.map((p) => p.pfn),
      size,
    };
    await this.host.command(this.dev, "RESOURCE_CREATE_2D", () => {
      this.host.resources.set(`${this.dev.name}:${id}`, obj);
    });
    await this.host.command(this.dev, "RESOURCE_ATTACH_BACKING", () => obj.pfns.length);
    return { id, obj, pages, uuid: null, uuidPending: null, deviceAttaches: 0 };
  }

  /** Guest CPU writes into a resource (what rendering produces). */
  draw(res: GpuResource, offset: number, bytes: Uint8Array): void {
    writePages(this.host.world, res.obj.pfns, offset, bytes);
  }

  /** Guest CPU reads a resource. */
  read(res: GpuResource, offset: number, len: number): Uint8Array {
    return readPages(this.host.world, res.obj.pfns, offset, len);
  }

  /** `virtgpu_gem_prime_export`: the resource as a virtio dma-buf. */
  export(res: GpuResource): DmaBuf {
    const host = this.host;
    const dev = this.dev;
    const world = host.world;
    return virtioDmaBufExport(world, {
      expName: "virtio-gpu",
      owner: "virtio_gpu",
      size: res.pages.length * PAGE,
      priv: res,
      ops: {
        attach: virtioDmaBufAttach,
        deviceAttach: (_buf: DmaBuf, _a: DmaBufAttachment) => {
          res.deviceAttaches++;
        },
        getUuid: (): Promise<Uuid> => {
          if (res.uuid) return Promise.resolve(res.uuid);
          res.uuidPending ??= host.command(dev, "RESOURCE_ASSIGN_UUID", () => {
            res.uuid = host.assignUuid(res.obj);
            return res.uuid;
          });
          return res.uuidPending;
        },
        mapDmaBuf: (attach: DmaBufAttachment, dir) => {
          const sgt = new SgTable(res.pages.map((p) => new Scatterlist(p, PAGE, 0)));
          dmaMapSgtable(world, attach.dev!, sgt, dir);
          return sgt;
        },
        unmapDmaBuf: (attach: DmaBufAttachment, sgt: SgTable, dir) => {
          dmaUnmapSgtable(world, attach.dev!, sgt, dir);
        },
        release: () => {
          host.resources.delete(`${dev.name}:${res.id}`);
          if (res.uuid) host.objects.delete(uuidHex(res.uuid));
          res.pages.forEach((p) => world.mem.freePages(p, 0));
        },
      },
    });
  }
}

/** How the importer references a buffer. */
export type VideoBufferRef =
  | { kind: "object"; uuid: Uuid; buf: DmaBuf }
  | {
    kind: "guest-pages";
    addrs: { addr: bigint; len: number }[];
    buf: DmaBuf;
    attach: DmaBufAttachment;
    sgt: SgTable;
  };

/** The virtio-video-like importer (a decoder whose backend copies frames). */
export class VirtioVideo {
  /** Its device. */
  readonly dev: Device;
  /** The VMM. */
  readonly host: VirtioHost;
  /** Why the last import fell back to guest pages, if it did. */
  lastFallback: string | null = null;

  /** A virtio-video device `name` on `host`. */
  constructor(host: VirtioHost, name = "virtio1") {
    this.host = host;
    this.dev = new Device(host.world, name, {
      dmaMask: dmaBitMask(64),
      coherentDmaMask: dmaBitMask(64),
    });
  }

  /**
   * `RESOURCE_CREATE` for an imported dma-buf: by UUID for a virtio
   * dma-buf, else by its guest DMA addresses.
   */
  async import(buf: DmaBuf): Promise<VideoBufferRef> {
    this.lastFallback = null;
    if (isVirtioDmaBuf(buf)) {
      const uuid = await virtioDmaBufGetUuid(buf);
      await this.host.command(this.dev, "RESOURCE_CREATE(object)", () => {
        if (!this.host.objects.has(uuidHex(uuid))) {
          throw new KernelError("ENOENT", `virtio-video: host has no object ${uuidHex(uuid)}`);
        }
      });
      return { kind: "object", uuid, buf };
    }
    try {
      await virtioDmaBufGetUuid(buf);
    } catch (e) {
      if (!(e instanceof KernelError) || e.code !== "EINVAL") throw e;
      this.lastFallback = e.message;
    }
    const attach = await dmaBufAttach(buf, this.dev);
    const sgt = await attach.mapUnlocked("DMA_BIDIRECTIONAL");
    const addrs: { addr: bigint; len: number }[] = [];
    for (let i = 0; i < sgt.nents; i++) {
      addrs.push({ addr: sgt.sgl[i]!.dmaAddress, len: sgt.sgl[i]!.dmaLength });
    }
    await this.host.command(this.dev, "RESOURCE_CREATE(guest-pages)", () => addrs.length);
    return { kind: "guest-pages", addrs, buf, attach, sgt };
  }

  /** The backend's view of a reference as host-readable pages. */
  #pfns(ref: VideoBufferRef): number[] {
    if (ref.kind === "object") return this.host.objects.get(uuidHex(ref.uuid))!.pfns;
    const pfns: number[] = [];
    for (const a of ref.addrs) {
      for (let off = 0; off < a.len; off += PAGE) pfns.push(Number(a.addr) / PAGE + off / PAGE);
    }
    return pfns;
  }

  /**
   * Queues a decode: the backend copies `len` bytes of the input buffer to
   * the output buffer (a frame passes through unchanged).
   */
  async decode(input: VideoBufferRef, output: VideoBufferRef, len: number): Promise<void> {
    await this.host.command(this.dev, "QUEUE(decode)", () => {
      const bytes = readPages(this.host.world, this.#pfns(input), 0, len);
      writePages(this.host.world, this.#pfns(output), 0, bytes);
    });
  }

  /** Drops a reference (unmaps and detaches a guest-pages import). */
  async release(ref: VideoBufferRef): Promise<void> {
    if (ref.kind === "guest-pages") {
      await ref.attach.unmapUnlocked(ref.sgt, "DMA_BIDIRECTIONAL");
      await ref.attach.detach();
    }
  }
}
