// The mask editor (opened from a LoadImage node): paint and erase a mask over the image.

import type { LGraphNode } from "@comfyorg/litegraph";
import type { App } from "./app";
import { toast } from "./ui";

export function initMaskEditor(_app: App): void {}

export function openMaskEditor(_app: App, _node: LGraphNode): void {
  toast("The mask editor is not built yet");
}
