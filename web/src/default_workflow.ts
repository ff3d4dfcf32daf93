// The workflow a first visit opens: the classic txt2img graph, built from the server's nodes
// (so it always matches what /object_info declares) rather than stored as a JSON file.

import { LGraph, LiteGraph, type LGraphNode } from "@comfyorg/litegraph";
import type { ObjectInfo } from "./api";

function set(node: LGraphNode, name: string, value: unknown): void {
  const w = node.widgets?.find((x) => x.name === name);
  if (w) w.value = value as any;
}

// Loom's own demo model (models/checkpoints/, see the README) draws 128x128 scenes of coloured
// shapes. When it is the only checkpoint — a fresh install — the first graph is set up for it, so
// the first Queue draws what the prompt says within seconds on a CPU.
export const DEMO_CHECKPOINT = "loom-demo-shapes.safetensors";

function onlyDemoModel(info: ObjectInfo): boolean {
  const spec = info.CheckpointLoaderSimple?.input?.required?.ckpt_name as unknown;
  const choices = Array.isArray(spec) && Array.isArray(spec[0]) ? (spec[0] as unknown[]) : [];
  return choices.length === 1 && choices[0] === DEMO_CHECKPOINT;
}

export function defaultWorkflow(info: ObjectInfo): object {
  const demo = onlyDemoModel(info);
  const graph = new LGraph();
  const add = (type: string, x: number, y: number): LGraphNode | null => {
    if (!info[type]) return null;
    const node = LiteGraph.createNode(type);
    if (!node) return null;
    node.pos = [x, y];
    graph.add(node);
    return node;
  };
  const ckpt = add("CheckpointLoaderSimple", 40, 200);
  const pos = add("CLIPTextEncode", 420, 60);
  const neg = add("CLIPTextEncode", 420, 330);
  const latent = add("EmptyLatentImage", 420, 590);
  const sampler = add("KSampler", 860, 160);
  const decode = add("VAEDecode", 1230, 160);
  const save = add("SaveImage", 1460, 160);
  if (pos) {
    pos.title = "Positive prompt";
    set(pos, "text", "a watercolor painting of a lighthouse on a cliff at sunrise, soft light");
  }
  if (neg) {
    neg.title = "Negative prompt";
    set(neg, "text", "blurry, low quality, watermark");
  }
  if (demo) {
    if (ckpt) set(ckpt, "ckpt_name", DEMO_CHECKPOINT);
    if (pos) set(pos, "text", "a large red circle at the top left and a blue star at the bottom right on a white background");
    if (neg) set(neg, "text", "");
    if (latent) {
      set(latent, "width", 128);
      set(latent, "height", 128);
    }
    if (sampler) set(sampler, "cfg", 5);
  }
  if (save) save.size = [360, 400];
  if (ckpt && sampler && pos && neg && latent && decode && save) {
    ckpt.connect(0, sampler, "model");
    ckpt.connect(1, pos, "clip");
    ckpt.connect(1, neg, "clip");
    ckpt.connect(2, decode, "vae");
    pos.connect(0, sampler, "positive");
    neg.connect(0, sampler, "negative");
    latent.connect(0, sampler, "latent_image");
    sampler.connect(0, decode, "samples");
    decode.connect(0, save, "images");
  }
  return graph.serialize();
}
