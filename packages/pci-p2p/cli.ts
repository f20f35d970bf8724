/**
 * DOC: `dmalab topo`
 *
 * The command behind `dmalab topo FILE`: loads a topology (NCCL XML, an
 * `lspci -tv`/`-tvnn` tree, a sysfs directory, a JSON machine spec, or a
 * preset), builds it into a fresh world and prints the `lspci -tv` tree,
 * the `nvidia-smi topo -m` matrix (`--matrix`) or the P2PDMA listing
 * (`--p2p`), as text or `--json`. Exit codes: 0 ok, 1 the input breaks a
 * rule (malformed file, invalid machine), 2 usage.
 *
 * Locking: not model code; reads its input file before building the world.
 *
 * @module
 */
import { Kernel } from "@dmalab/kernel";
import { buildMachine, type MachineSpec } from "./builder.ts";
import type { CpuInfo } from "./fabric.ts";
import { PRESETS } from "./presets.ts";
import { ncclTopoToSpec, parseNcclTopo } from "./loaders/nccl.ts";
import { lspciToSpec, parseLspciTree } from "./loaders/lspci.ts";
import { loadSysfsTree } from "./loaders/sysfs.ts";
import {
  formatLspciTree,
  formatP2pPairs,
  formatTopoMatrix,
  p2pPairs,
  topoMatrix,
} from "./output.ts";

/** Where the CLI writes. */
export interface TopoIo {
  /** Normal output. */
  stdout(s: string): void;
  /** Diagnostics. */
  stderr(s: string): void;
}

/** `dmalab topo --help`. */
export const TOPO_USAGE: string = `usage: dmalab topo [FILE | --preset NAME] [options]

Loads a PCI topology and prints it as \`lspci -tv\` would (default), as an
\`nvidia-smi topo -m\` matrix (--matrix), or the Linux P2PDMA map type and
distance of every ordered pair of endpoints (--p2p).

  FILE                 NCCL topology XML, lspci -tv/-tvnn text, a sysfs
                       directory, or a JSON machine spec (type detected)
  --format F           force the input type: nccl | lspci | sysfs | json
  --preset NAME        ${Object.keys(PRESETS).join(" | ")}
  --matrix             nvidia-smi topo -m style matrix (GPUs and NICs)
  --p2p                P2PDMA map type and distance for every endpoint pair
  --json               machine-readable output
  --nn                 tree: show [vendor:device] ids
  --iommu              an IOMMU requested ACS (pci_request_acs) before enumeration
  --disable-acs-redir L  pci=disable_acs_redir=L (';'-separated BDFs)
  --cpu V:F            CPU vendor and family, e.g. amd:0x19 or intel:6
  --numa B=N[,B=N]     root buses >= B (hex) are on NUMA node N (lspci input)
  --help               this text

Exit status: 0 ok, 1 the input breaks a rule, 2 usage error.
`;

class UsageError extends Error {}

function parseCpu(s: string): CpuInfo {
  const m = /^(amd|intel|zhaoxin|hygon|other):(0x[0-9a-f]+|\d+)$/i.exec(s);
  if (!m) throw new UsageError(`--cpu: expected VENDOR:FAMILY (amd:0x19), got "${s}"`);
  const v = m[1]!.toLowerCase();
  const vendor = v === "amd"
    ? "AMD"
    : v === "intel"
    ? "Intel"
    : v === "zhaoxin"
    ? "Zhaoxin"
    : v === "hygon"
    ? "Hygon"
    : "other";
  return {
    arch: "x86_64",
    vendor,
    family: parseInt(m[2]!, m[2]!.startsWith("0x") ? 16 : 10),
    model: 0,
  };
}

function parseNuma(s: string): (bus: number) => number {
  const rules = s.split(",").map((r) => {
    const m = /^([0-9a-f]{1,2})=(\d+)$/i.exec(r.trim());
    if (!m) throw new UsageError(`--numa: expected BUS=NODE[,BUS=NODE], got "${s}"`);
    return [parseInt(m[1]!, 16), parseInt(m[2]!, 10)] as const;
  }).sort((a, b) => a[0] - b[0]);
  return (bus) => {
    let node = 0;
    for (const [b, n] of rules) if (bus >= b) node = n;
    return node;
  };
}

/**
 * Runs `dmalab topo` with `args`; returns the exit code.
 *
 * @example
 * ```ts
 * import { topoMain } from "@dmalab/pci-p2p";
 * let out = "";
 * const code = await topoMain(["--preset", "default", "--p2p", "--json"], {
 *   stdout: (s) => (out += s),
 *   stderr: () => {},
 * });
 * code; // 0
 * JSON.parse(out).pairs.length; // 12
 * ```
 */
export async function topoMain(args: string[], io: TopoIo): Promise<number> {
  let file: string | undefined;
  let format: string | undefined;
  let preset: string | undefined;
  let mode: "tree" | "matrix" | "p2p" = "tree";
  let json = false;
  let nn = false;
  let iommu = false;
  let disableAcsRedir: string[] = [];
  let cpu: CpuInfo | undefined;
  let numa: ((bus: number) => number) | undefined;
  try {
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      const value = () => {
        const v = args[++i];
        if (v === undefined) throw new UsageError(`${a} needs a value`);
        return v;
      };
      if (a === "--help" || a === "-h") {
        io.stdout(TOPO_USAGE);
        return 0;
      } else if (a === "--format") {
        format = value();
        if (!["nccl", "lspci", "sysfs", "json"].includes(format)) {
          throw new UsageError(`--format: unknown format "${format}"`);
        }
      } else if (a === "--preset") {
        preset = value();
        if (!(preset in PRESETS)) {
          throw new UsageError(
            `--preset: unknown preset "${preset}" (${Object.keys(PRESETS).join(", ")})`,
          );
        }
      } else if (a === "--matrix") {
        mode = mode === "p2p" ? err2("--matrix and --p2p exclude each other") : "matrix";
      } else if (a === "--p2p") {
        mode = mode === "matrix" ? err2("--matrix and --p2p exclude each other") : "p2p";
      } else if (a === "--json") json = true;
      else if (a === "--nn") nn = true;
      else if (a === "--iommu") iommu = true;
      else if (a === "--disable-acs-redir") {
        disableAcsRedir = value().split(";").filter((x) => x !== "");
      } else if (a === "--cpu") cpu = parseCpu(value());
      else if (a === "--numa") numa = parseNuma(value());
      else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
      else if (file !== undefined) throw new UsageError(`only one FILE (got ${file} and ${a})`);
      else file = a;
    }
    if ((file === undefined) === (preset === undefined)) {
      throw new UsageError("give exactly one of FILE or --preset NAME");
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`dmalab topo: ${e.message}\n\n${TOPO_USAGE}`);
      return 2;
    }
    throw e;
  }

  let spec: MachineSpec;
  const warnings: string[] = [];
  try {
    if (preset !== undefined) {
      spec = PRESETS[preset]!({ iommu, disableAcsRedir });
    } else {
      let isDir = false;
      try {
        isDir = (await Deno.stat(file!)).isDirectory;
      } catch (e) {
        io.stderr(`dmalab topo: ${file}: ${(e as Error).message}\n`);
        return 1;
      }
      const kind = format ?? (isDir ? "sysfs" : undefined);
      if (kind === "sysfs") {
        spec = loadSysfsTree(file!, cpu ? { cpu } : {});
      } else {
        const text = await Deno.readTextFile(file!);
        const t = text.trimStart();
        const k = kind ??
          (t.startsWith("<")
            ? "nccl"
            : t.startsWith("{")
            ? "json"
            : t.startsWith("-")
            ? "lspci"
            : undefined);
        if (k === undefined) {
          io.stderr(
            `dmalab topo: ${file}: cannot tell the format (use --format nccl|lspci|sysfs|json)\n`,
          );
          return 1;
        }
        if (k === "nccl") {
          const topo = parseNcclTopo(text, file);
          warnings.push(...topo.warnings);
          spec = ncclTopoToSpec(topo, `nccl:${file}`);
        } else if (k === "lspci") {
          spec = lspciToSpec(parseLspciTree(text, file), {
            warnings,
            ...(cpu ? { cpu } : {}),
            ...(numa ? { numa } : {}),
          });
        } else {
          try {
            spec = JSON.parse(text) as MachineSpec;
          } catch (e) {
            io.stderr(`dmalab topo: ${file}: invalid JSON: ${(e as Error).message}\n`);
            return 1;
          }
        }
      }
      if (cpu) spec = { ...spec, cpu };
      spec = {
        ...spec,
        iommu: iommu || (spec.iommu ?? false),
        kernelParams: {
          ...(spec.kernelParams ?? {}),
          disableAcsRedir: [...(spec.kernelParams?.disableAcsRedir ?? []), ...disableAcsRedir],
        },
      };
    }
    const world = new Kernel({ strict: false });
    const fabric = buildMachine(world, spec);
    for (const w of warnings) io.stderr(`warning: ${w}\n`);
    if (mode === "tree") {
      if (json) {
        io.stdout(
          JSON.stringify(
            {
              name: fabric.name,
              cpu: fabric.cpu,
              devices: fabric.devices.map((d) => ({
                name: d.name,
                bdf: d.bdf,
                type: d.type,
                vendor: d.vendor,
                device: d.deviceId,
                class: d.classCode,
                label: d.label,
                upstream: d.parent?.name ?? null,
                numaNode: d.host.numaNode,
                link: d.link,
                acs: d.hasAcs ? { cap: d.acsCap, ctrl: d.acsCtrl } : null,
                bars: d.bars.filter((b) => b !== null).map((b) => ({
                  index: b!.index,
                  start: b!.start === null ? null : `0x${b!.start.toString(16)}`,
                  size: `0x${b!.size.toString(16)}`,
                  prefetch: b!.prefetch,
                  is64: b!.is64,
                })),
              })),
            },
            null,
            2,
          ) + "\n",
        );
      } else io.stdout(formatLspciTree(fabric, { nn }));
    } else if (mode === "matrix") {
      const m = topoMatrix(fabric);
      if (json) {
        io.stdout(
          JSON.stringify(
            {
              devices: m.names.map((n, i) => ({ name: n, bdf: m.devices[i]!.name })),
              matrix: m.levels,
              nics: m.nicNames,
            },
            null,
            2,
          ) + "\n",
        );
      } else io.stdout(formatTopoMatrix(m));
    } else {
      const pairs = p2pPairs(fabric);
      if (json) io.stdout(JSON.stringify({ pairs }) + "\n");
      else io.stdout(formatP2pPairs(pairs));
    }
    return 0;
  } catch (e) {
    io.stderr(`dmalab topo: ${(e as Error).message}\n`);
    return 1;
  }
}

function err2(msg: string): never {
  throw new UsageError(msg);
}
