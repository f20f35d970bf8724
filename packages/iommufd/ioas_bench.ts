/**
 * IOAS benchmarks: a 128 GiB VFIO dma-buf mapped into an IOAS with a device
 * attached (1 GiB IOPTEs) and unmapped again; 256 MiB of user memory pinned
 * and mapped (4 KiB pages, runs coalesced where physically contiguous).
 */
import { Kernel, MmStruct } from "@dmalab/kernel";
import { defaultMachine } from "@dmalab/pci-p2p";
import { iommuSetup } from "@dmalab/iommu";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VfioPciCoreDevice,
  vfioPciCoreFeatureDmaBuf,
} from "@dmalab/vfio";
import {
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommufdCtx,
  iommufdIoasMapDmabuf,
} from "./mod.ts";

const GiB = 2 ** 30;
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

{
  const world = new Kernel();
  const m = defaultMachine(world, { iommu: true });
  iommuSetup(world);
  const vdev = new VfioPciCoreDevice(world, m.gpu);
  const ictx = new IommufdCtx(world);
  let fd = 0;
  let ioas = 0;
  await world.runTask("qemu", async () => {
    await vdev.open();
    fd =
      (await vfioPciCoreFeatureDmaBuf(vdev, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, {
        regionIndex: 1,
        openFlags: 2,
        flags: 0,
        dmaRanges: [{ offset: 0, length: 128 * GiB }],
      }))!.fd;
    ioas = ictx.ioasAlloc();
    await ictx.attach(ictx.bindDevice(m.nic), ioas);
  });
  Deno.bench("IOAS_MAP_FILE + UNMAP of a 128 GiB VFIO dma-buf (1 GiB IOPTEs)", async () => {
    await world.runTask("qemu", async () => {
      const iova = await iommufdIoasMapDmabuf(ictx, ioas, RW, fd, 0, 128 * GiB);
      await ictx.ioasUnmap(ioas, iova, 128 * GiB);
    });
  });
}

{
  const world = new Kernel();
  const m = defaultMachine(world, { iommu: true });
  iommuSetup(world);
  const mm = new MmStruct(world, "qemu");
  const ictx = new IommufdCtx(world);
  let ioas = 0;
  let va = 0;
  const len = 256 << 20;
  await world.runTask("qemu", async () => {
    ioas = ictx.ioasAlloc();
    await ictx.attach(ictx.bindDevice(m.nic), ioas);
    va = await mm.mmap({ length: len });
  });
  Deno.bench("IOAS_MAP + UNMAP of 256 MiB user memory (65,536 pinned pages)", async () => {
    await world.runTask("qemu", async () => {
      const iova = await ictx.ioasMap({ ioasId: ioas, flags: RW, mm, userVa: va, length: len });
      await ictx.ioasUnmap(ioas, iova, len);
    });
  });
}
