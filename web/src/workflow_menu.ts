// The Workflow and Templates menus, and files dropped on the canvas: new / open / save / save
// as (named workflows on the server, /userdata), export and import JSON, PNGs with metadata,
// images dragged from the history panel, and the templates the server ships.

import { api, ApiError } from "./api";
import type { App } from "./app";
import { defaultWorkflow } from "./default_workflow";
import { DRAG_MIME } from "./gallery";
import { imageInputName, uploadToNode } from "./image_upload";
import { askText, dialog, dropdown, el, toast, type MenuItem } from "./ui";
import { isWorkflow } from "./workflows";

export function newWorkflow(app: App): void {
  app.tabs.open(defaultWorkflow(app.info), "Unsaved workflow");
}

/** Opens a workflow in the active tab when it is empty and unmodified, else in a new tab. */
export function openWorkflow(app: App, workflow: any, name: string, savedName: string | null = null): void {
  if (!isWorkflow(workflow)) {
    toast("That file is not a UI workflow (no 'nodes' list)", "error", 8000);
    return;
  }
  app.tabs.open(workflow, name, savedName);
}

export async function saveWorkflow(app: App, saveAs = false): Promise<boolean> {
  const tab = app.tabs.active;
  let name = tab.savedName;
  if (saveAs || !name) {
    const answer = await askText("Save workflow", (tab.savedName ?? tab.name).replace(/\.json$/, ""), "Name");
    if (!answer?.trim()) return false;
    name = answer.trim().replace(/\.json$/i, "") + ".json";
  }
  try {
    await api.saveWorkflow(name, app.tabs.serialize(tab));
    app.tabs.markSaved(tab, name);
    toast(`Saved ${name}`, "ok");
    return true;
  } catch (e) {
    toast(`Save failed: ${(e as Error).message}`, "error", 8000);
    return false;
  }
}

export async function openFromServer(app: App): Promise<void> {
  let names: string[] = [];
  try {
    names = await api.listWorkflows();
  } catch (e) {
    toast(`Could not list workflows: ${(e as Error).message}`, "error");
    return;
  }
  const list = el("ul", { class: "list workflow-list", "data-testid": "workflow-list" });
  const d = dialog("Open a saved workflow", el("div", {}, list), { testid: "open-dialog" });
  const fill = () => {
    list.replaceChildren(...names.map((name) => el("li", { class: "row" },
      el("button", { type: "button", class: "link", "data-testid": "workflow-entry", dataset: { name },
        onclick: async () => {
          d.close();
          try {
            openWorkflow(app, await api.readWorkflow(name), name.replace(/\.json$/, ""), name);
          } catch (e) {
            toast(`Could not open ${name}: ${(e as Error).message}`, "error");
          }
        } }, name.replace(/\.json$/, "")),
      el("button", { type: "button", class: "small danger", title: "Delete",
        onclick: async () => {
          if (!confirm(`Delete ${name} from the server?`)) return;
          await api.deleteWorkflow(name);
          names = names.filter((n) => n !== name);
          fill();
        } }, "Delete"))));
    if (!names.length) list.append(el("li", { class: "muted" }, "No saved workflows yet (Workflow ▸ Save)."));
  };
  fill();
}

export function exportWorkflow(app: App): void {
  const tab = app.tabs.active;
  const blob = new Blob([JSON.stringify(app.tabs.serialize(tab), null, 2)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `${tab.name.replace(/[^\w.-]+/g, "_") || "workflow"}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** A JSON workflow or a PNG carrying one (read by the server's /workflow/load). */
export async function importFile(app: App, file: File): Promise<void> {
  const name = file.name.replace(/\.(json|png)$/i, "") || "Imported";
  try {
    if (file.type === "application/json" || /\.json$/i.test(file.name)) {
      const data = JSON.parse(await file.text());
      if (isWorkflow(data)) return openWorkflow(app, data, name);
    }
    const result = await api.loadFile(file);
    if (result.workflow) openWorkflow(app, result.workflow, name);
    else toast("The file carries only an API prompt, no editor workflow; it cannot be drawn", "error", 8000);
  } catch (e) {
    const msg = e instanceof ApiError ? e.message : `not a workflow: ${(e as Error).message}`;
    toast(`Could not load ${file.name}: ${msg}`, "error", 8000);
  }
}

function pickFile(app: App): void {
  const input = el("input", { type: "file", accept: ".json,.png,application/json,image/png", style: { display: "none" },
    "data-testid": "import-file" }) as HTMLInputElement;
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    input.remove();
    if (file) importFile(app, file);
  });
  document.body.append(input);
  input.click();
}

export function initWorkflowMenus(app: App): void {
  const items = (): MenuItem[] => [
    { label: "New", action: () => newWorkflow(app), testid: "wf-new" },
    { label: "Open…", action: () => openFromServer(app), hint: "Ctrl+O", testid: "wf-open" },
    { label: "Save", action: () => saveWorkflow(app), hint: "Ctrl+S", testid: "wf-save" },
    { label: "Save as…", action: () => saveWorkflow(app, true), testid: "wf-save-as" },
    { separator: true, label: "" },
    { label: "Export JSON", action: () => exportWorkflow(app), testid: "wf-export" },
    { label: "Import JSON or PNG…", action: () => pickFile(app), testid: "wf-import" },
    { separator: true, label: "" },
    { label: "Refresh node lists", action: () => app.refreshNodeDefs().then(() => toast("Node lists refreshed", "ok")), hint: "R", testid: "wf-refresh" },
  ];
  const wfButton = document.querySelector("#workflow-menu button") as HTMLElement;
  wfButton.addEventListener("click", () => dropdown(wfButton, items()));

  const tButton = document.querySelector("#templates-menu button") as HTMLElement;
  tButton.addEventListener("click", () => dropdown(tButton, async () => templateItems(app)));

  initDrop(app);
}

async function templateItems(app: App): Promise<MenuItem[]> {
  let index: any;
  try {
    index = await api.templates();
  } catch {
    return [{ label: "No templates on this server", disabled: true }];
  }
  // ComfyUI's index: [{moduleName, title, templates: [{name, title, description}]}], files at
  // /templates/<name>.json.
  const out: MenuItem[] = [];
  for (const group of Array.isArray(index) ? index : []) {
    for (const t of group?.templates ?? []) {
      if (!t?.name) continue;
      const path = `/templates/${encodeURIComponent(t.name)}.json`;
      out.push({ label: t.title || t.name, testid: "template-item", action: async () => {
        try {
          openWorkflow(app, await api.template(path), t.title || t.name);
        } catch (e) {
          toast(`Could not load the template: ${(e as Error).message}`, "error");
        }
      } });
    }
  }
  return out;
}

function initDrop(app: App): void {
  const target = document.getElementById("canvas-wrap")!;
  target.addEventListener("dragover", (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  target.addEventListener("drop", async (e) => {
    e.preventDefault();
    const dt = e.dataTransfer;
    if (!dt) return;
    const ref = dt.getData(DRAG_MIME);
    if (ref) {
      // An image from the history panel: load the workflow its PNG carries.
      const blob = await (await fetch(api.viewUrl(JSON.parse(ref)))).blob();
      return importFile(app, new File([blob], JSON.parse(ref).filename, { type: blob.type }));
    }
    const file = dt.files?.[0];
    if (!file) return;
    // An image dropped on a LoadImage node uploads into it; anywhere else it is read as a workflow.
    const rect = app.canvas.canvas.getBoundingClientRect();
    const [gx, gy] = app.canvas.ds.convertCanvasToOffset([e.clientX - rect.left, e.clientY - rect.top]);
    const node = app.graph.getNodeOnPos(gx, gy);
    if (node && imageInputName(app, node) && file.type.startsWith("image/")) {
      return uploadToNode(app, node, file);
    }
    return importFile(app, file);
  });
}
