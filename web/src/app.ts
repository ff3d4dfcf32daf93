// The editor's shared state: the server's node definitions, the canvas, the websocket and the
// open workflow tabs. Feature modules receive this object rather than reaching for globals.

import type { LGraph, LGraphCanvas } from "@comfyorg/litegraph";
import { api, type ObjectInfo } from "./api";
import type { Connection } from "./connection";
import { refreshCombos, registerNodeTypes } from "./node_types";
import type { Tabs } from "./workflows";

export interface App {
  info: ObjectInfo;
  canvas: LGraphCanvas;
  conn: Connection;
  tabs: Tabs;
  /** The graph of the tab that queued each prompt, so its events land on that tab's nodes. */
  promptGraphs: Map<string, LGraph>;
  readonly graph: LGraph;
  refreshNodeDefs(): Promise<void>;
}

export function createApp(info: ObjectInfo, canvas: LGraphCanvas, conn: Connection): App {
  const app: App = {
    info,
    canvas,
    conn,
    tabs: null as unknown as Tabs,
    promptGraphs: new Map(),
    get graph() {
      return canvas.graph as LGraph;
    },
    async refreshNodeDefs() {
      const fresh = await api.objectInfo();
      app.info = fresh;
      registerNodeTypes(fresh);
      refreshCombos(app.tabs.all().map((t) => t.graph), fresh);
    },
  };
  return app;
}
