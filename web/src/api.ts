// The HTTP API client: every call the editor makes to the server goes through here, so the
// editor uses exactly the routes any other client (script, ComfyUI tool) can use.

export type InputSpec = [string | string[], Record<string, any>?];

export interface NodeDef {
  name: string;
  display_name?: string;
  description?: string;
  category?: string;
  input: {
    required?: Record<string, InputSpec>;
    optional?: Record<string, InputSpec>;
    hidden?: Record<string, unknown>;
  };
  input_order?: { required?: string[]; optional?: string[] };
  output: string[];
  output_name?: string[];
  output_is_list?: boolean[];
  output_tooltips?: string[];
  output_node?: boolean;
  deprecated?: boolean;
  experimental?: boolean;
}

export type ObjectInfo = Record<string, NodeDef>;

export interface ImageRef {
  filename: string;
  subfolder?: string;
  type?: string;
}

/** The server's error body: ``{"error": {type, message, details}, "node_errors": {...}}``. */
export interface NodeErrorEntry {
  errors: { type: string; message: string; details?: string; extra_info?: Record<string, any> }[];
  dependent_outputs?: string[];
  class_type?: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public body: any,
  ) {
    super(describeError(body) || `HTTP ${status}`);
  }
  get nodeErrors(): Record<string, NodeErrorEntry> {
    return (this.body && typeof this.body === "object" && this.body.node_errors) || {};
  }
}

function describeError(body: any): string {
  if (!body || typeof body !== "object") return typeof body === "string" ? body : "";
  const e = body.error;
  if (typeof e === "string") return e;
  if (e && typeof e === "object") return [e.message, e.details].filter(Boolean).join(": ");
  return "";
}

async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(path, { credentials: "same-origin", ...init });
  if (!response.ok) {
    let body: any = null;
    const text = await response.text();
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    throw new ApiError(response.status, body);
  }
  return response;
}

async function getJson<T = any>(path: string): Promise<T> {
  return (await request(path)).json();
}

async function postJson<T = any>(path: string, body: unknown): Promise<T> {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return text ? JSON.parse(text) : (undefined as T);
}

export const api = {
  objectInfo: () => getJson<ObjectInfo>("/object_info"),

  /** Queue a UI workflow; the server converts it (one converter for every client). */
  queueWorkflow: (workflow: unknown, clientId: string, front = false) =>
    postJson<{ prompt_id: string; number: number }>("/prompt", {
      workflow,
      client_id: clientId,
      front,
    }),

  queue: () => getJson<{ queue_running: any[]; queue_pending: any[] }>("/queue"),
  deleteFromQueue: (ids: string[]) => postJson("/queue", { delete: ids }),
  clearQueue: () => postJson("/queue", { clear: true }),
  interrupt: () => postJson("/interrupt", {}),

  history: (maxItems = 64) => getJson<Record<string, any>>(`/history?max_items=${maxItems}`),
  historyItem: (id: string) => getJson<Record<string, any>>(`/history/${encodeURIComponent(id)}`),
  clearHistory: () => postJson("/history", { clear: true }),

  viewUrl(ref: ImageRef, extra = ""): string {
    const q = new URLSearchParams({
      filename: ref.filename,
      subfolder: ref.subfolder ?? "",
      type: ref.type ?? "output",
    });
    return `/view?${q}${extra}`;
  },

  async uploadImage(file: Blob, name: string, overwrite = false): Promise<ImageRef & { name: string }> {
    const form = new FormData();
    form.append("image", file, name);
    form.append("type", "input");
    if (overwrite) form.append("overwrite", "true");
    return (await request("/upload/image", { method: "POST", body: form })).json();
  },

  /** ComfyUI's mask upload: the mask's alpha becomes the original image's alpha. */
  async uploadMask(mask: Blob, name: string, original: ImageRef): Promise<ImageRef & { name: string }> {
    const form = new FormData();
    form.append("image", mask, name);
    form.append("type", "input");
    form.append("subfolder", "clipspace");
    form.append("original_ref", JSON.stringify(original));
    return (await request("/upload/mask", { method: "POST", body: form })).json();
  },

  /** A PNG (with metadata) or a workflow file, read by the server: ``{workflow, prompt}``. */
  async loadFile(file: Blob): Promise<{ workflow: any; prompt: any }> {
    const form = new FormData();
    form.append("file", file, (file as File).name || "file");
    return (await request("/workflow/load", { method: "POST", body: form })).json();
  },

  listWorkflows: () =>
    getJson<string[]>("/userdata?dir=workflows&recurse=true").catch((e) => {
      if (e instanceof ApiError && e.status === 404) return [];
      throw e;
    }),
  readWorkflow: (name: string) => getJson(`/userdata/${encodeURIComponent("workflows/" + name)}`),
  async saveWorkflow(name: string, workflow: unknown, overwrite = true): Promise<void> {
    await request(
      `/userdata/${encodeURIComponent("workflows/" + name)}?overwrite=${overwrite}`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(workflow) },
    );
  },
  deleteWorkflow: (name: string) =>
    request(`/userdata/${encodeURIComponent("workflows/" + name)}`, { method: "DELETE" }),

  templates: () => getJson<any>("/templates/index.json"),
  template: (path: string) => getJson<any>(path),
};
