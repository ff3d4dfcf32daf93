// The websocket to the server: one per tab, reconnecting by itself (a server restart, a network
// blip) and telling the rest of the editor through small typed events.

export type ConnectionState = "connecting" | "open" | "reconnecting";

type Listener = (data: any) => void;

/** ComfyUI's binary frame: 4-byte big-endian event (1 = preview image), then for previews a
 * 4-byte image format (1 = JPEG, 2 = PNG) and the image bytes. */
const PREVIEW_IMAGE = 1;

export class Connection {
  readonly clientId: string;
  state: ConnectionState = "connecting";
  private ws: WebSocket | null = null;
  private listeners = new Map<string, Set<Listener>>();
  private retryDelay = 500;
  private everOpened = false;

  constructor() {
    // One id per tab, kept across reloads of that tab, so a reloaded page still receives the
    // progress and previews of the prompts it queued.
    let id = sessionStorage.getItem("loom.clientId");
    if (!id) {
      id = crypto.randomUUID ? crypto.randomUUID().replace(/-/g, "") : String(Math.random()).slice(2);
      sessionStorage.setItem("loom.clientId", id);
    }
    this.clientId = id;
  }

  on(event: string, listener: Listener): void {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(listener);
  }

  emit(event: string, data?: any): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        l(data);
      } catch (e) {
        console.warn(`listener for ${event} failed`, e);
      }
    }
  }

  connect(): void {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws?clientId=${encodeURIComponent(this.clientId)}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.retryDelay = 500;
      // Ask for live previews (servers send them only to clients that ask).
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: false, previews: true } }));
      this.setState("open");
      if (reconnected) this.emit("reconnected");
    };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setState(this.everOpened ? "reconnecting" : "connecting");
      setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    };
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.emit("connection", state);
  }

  private onMessage(data: string | ArrayBuffer): void {
    if (typeof data !== "string") {
      const view = new DataView(data);
      if (data.byteLength < 8 || view.getUint32(0) !== PREVIEW_IMAGE) return;
      const mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
      this.emit("preview", new Blob([data.slice(8)], { type: mime }));
      return;
    }
    let msg: any;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg && typeof msg.type === "string") this.emit(msg.type, msg.data ?? {});
  }
}
