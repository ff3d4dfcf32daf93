// LoadImage's upload button and preview: a chosen file is uploaded to the input folder, the
// combos are refreshed (every LoadImage sees the new file) and the node shows the picture.

import { api } from "./api";
import type { App } from "./app";
import { clearNodeImages, setNodeImages } from "./node_images";
import { toast } from "./ui";
import type { LGraphNode } from "@comfyorg/litegraph";

/** The name of the node's image combo (the input declared with image_upload). */
export function imageInputName(app: App, node: LGraphNode): string | null {
  const def = app.info[node.type ?? ""];
  for (const section of [def?.input?.required, def?.input?.optional]) {
    for (const [name, spec] of Object.entries(section ?? {})) if ((spec as any)[1]?.image_upload) return name;
  }
  return null;
}

export function inputImageUrl(value: string): string {
  const slash = value.lastIndexOf("/");
  return api.viewUrl({ filename: value.slice(slash + 1), subfolder: slash >= 0 ? value.slice(0, slash) : "", type: "input" });
}

export function showInputPreview(node: LGraphNode, value: unknown): void {
  if (typeof value === "string" && value) setNodeImages(node, [inputImageUrl(value)]);
  else clearNodeImages(node);
}

export async function uploadToNode(app: App, node: LGraphNode, file: File): Promise<void> {
  const name = imageInputName(app, node);
  if (!name) return;
  try {
    const res = await api.uploadImage(file, file.name);
    const value = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    await app.refreshNodeDefs();
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget) widget.value = value;
    showInputPreview(node, value);
    app.tabs.checkChanges();
    toast(`Uploaded ${value}`, "ok");
  } catch (e) {
    toast(`Upload failed: ${(e as Error).message}`, "error", 8000);
  }
}

export function initImageUpload(app: App): void {
  document.addEventListener("loom:upload-image", (e: any) => {
    const node: LGraphNode = e.detail.node;
    const picker = document.createElement("input");
    picker.type = "file";
    picker.accept = "image/png,image/jpeg,image/webp,image/gif,image/bmp";
    picker.style.display = "none";
    picker.dataset.testid = "image-file-input";
    picker.addEventListener("change", () => {
      const file = picker.files?.[0];
      picker.remove();
      if (file) uploadToNode(app, node, file);
    });
    document.body.append(picker);
    picker.click();
  });
  document.addEventListener("loom:widget-changed", (e: any) => {
    const { node, name, value } = e.detail;
    if (name === imageInputName(app, node)) showInputPreview(node, value);
  });
}
