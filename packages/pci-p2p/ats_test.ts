import { ok, strictEqual, throws } from "node:assert/strict";
import { Kernel, KernelBug, KernelError } from "@dmalab/kernel";
import {
  buildMachine,
  defaultMachine,
  hostBridgeFn,
  nic,
  PCI_ACS_RR,
  PCI_ACS_UF,
  pciAcsPathEnabled,
  pciAtsPageAligned,
  pciAtsQueueDepth,
  pciAtsSupported,
  pciDisableAts,
  pciDisablePri,
  pciEnableAts,
  pciEnablePasid,
  pciEnablePri,
  pciMaxPasids,
  pciPrepareAts,
  rootPort,
} from "./mod.ts";

const errno = (code: string) => (e: unknown) => e instanceof KernelError && e.code === code;

function sriovMachine(world: Kernel, untrusted = false) {
  return buildMachine(world, {
    cpu: { vendor: "AMD", family: 0x19 },
    hostBridges: [{
      devices: [
        hostBridgeFn(0x1022, 0x14a4),
        rootPort([
          nic({
            sriov: { totalVfs: 4, numVfs: 2 },
            pasid: { width: 20, features: 0x2 },
            pri: { maxRequests: 64 },
          }),
        ], {
          externalFacing: untrusted,
        }),
      ],
    }],
  });
}

Deno.test("pci_ats_supported: capability and trust", () => {
  const w = new Kernel();
  const m = defaultMachine(w);
  ok(pciAtsSupported(m.nic));
  ok(!pciAtsSupported(m.nvme), "no ATS capability");
  const w2 = new Kernel();
  const f = sriovMachine(w2, true);
  const pf = f.dev("0000:01:00.0");
  ok(pf.untrusted && !pciAtsSupported(pf), "device below an external-facing port is untrusted");
  const w3 = new Kernel();
  const m3 = defaultMachine(w3, { noats: true });
  ok(!pciAtsSupported(m3.nic), "pci=noats drops the capability");
});

Deno.test("pci_enable_ats errno rules and PF/VF STU sharing", async (t) => {
  await t.step("EINVAL: no capability, page shift < 12", () => {
    const m = defaultMachine(new Kernel());
    throws(() => pciEnableAts(m.nvme, 12), errno("EINVAL"));
    throws(() => pciEnableAts(m.nic, 11), errno("EINVAL"));
    ok(!m.nic.ats.enabled);
  });
  await t.step("enable, EBUSY (WARN) on second enable, disable, WARN on double disable", () => {
    const w = new Kernel({ strict: false });
    const m = defaultMachine(w);
    pciEnableAts(m.nic, 12);
    ok(m.nic.ats.enabled);
    strictEqual(m.nic.ats.stu, 12);
    throws(() => pciEnableAts(m.nic, 12), errno("EBUSY"));
    strictEqual(w.bugs.length, 1);
    pciDisableAts(m.nic);
    ok(!m.nic.ats.enabled);
    pciDisableAts(m.nic);
    strictEqual(w.bugs.length, 2);
    const strict = defaultMachine(new Kernel());
    pciEnableAts(strict.nic, 12);
    throws(() => pciEnableAts(strict.nic, 12), KernelBug);
  });
  await t.step("VF must match the PF's STU", () => {
    const f = sriovMachine(new Kernel());
    const pf = f.dev("0000:01:00.0");
    const vf = f.dev("0000:01:00.1");
    throws(() => pciEnableAts(vf, 12), errno("EINVAL"), "PF STU not programmed");
    pciPrepareAts(pf, 13);
    strictEqual(pf.ats.stu, 13);
    ok(!pf.ats.enabled);
    throws(() => pciEnableAts(vf, 12), errno("EINVAL"));
    pciPrepareAts(vf, 12); // a VF never programs the STU: no-op
    strictEqual(pf.ats.stu, 13);
    pciEnableAts(vf, 13);
    ok(vf.ats.enabled);
    strictEqual(vf.ats.stu, 0, "VFs do not program their own STU");
    strictEqual(pciAtsQueueDepth(vf), 0);
    strictEqual(pciAtsQueueDepth(pf), 32);
    ok(pciAtsPageAligned(pf));
  });
});

Deno.test("PRI and PASID", async (t) => {
  await t.step("PRI: PF allocates min(max, reqs); VFs share the PF's", () => {
    const f = sriovMachine(new Kernel());
    const pf = f.dev("0000:01:00.0");
    const vf = f.dev("0000:01:00.1");
    throws(() => pciEnablePri(vf, 8), errno("EINVAL"));
    pciEnablePri(pf, 1000);
    strictEqual(pf.pri.reqsAlloc, 64);
    pciEnablePri(vf, 8);
    ok(vf.pri.enabled);
    pciDisablePri(pf);
    ok(!pf.pri.enabled);
  });
  await t.step("PASID needs ACS RR|UF to the root", () => {
    const w = new Kernel();
    const f = sriovMachine(w);
    const pf = f.dev("0000:01:00.0");
    ok(!pciAcsPathEnabled(pf, null, PCI_ACS_RR | PCI_ACS_UF));
    throws(() => pciEnablePasid(pf, 0), errno("EINVAL"));
    const w2 = new Kernel();
    const f2 = buildMachine(w2, {
      cpu: { vendor: "AMD", family: 0x19 },
      iommu: true,
      hostBridges: [{
        devices: [
          hostBridgeFn(0x1022, 0x14a4),
          rootPort([nic({ pasid: { width: 20, features: 0x2 } })]),
        ],
      }],
    });
    const d = f2.dev("0000:01:00.0");
    ok(pciAcsPathEnabled(d, null, PCI_ACS_RR | PCI_ACS_UF));
    throws(() => pciEnablePasid(d, 0x4), errno("EINVAL"), "Priv not supported");
    pciEnablePasid(d, 0x2);
    ok(d.pasid.enabled);
    strictEqual(pciMaxPasids(d), 1 << 20);
  });
});
