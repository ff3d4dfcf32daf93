// Vite builds the editor into web/dist, which is committed so running Loom needs no Node.
// Fixed file names (no content hashes) keep the bundle reproducible byte for byte, so the
// test command can rebuild it and compare; the server sends them with Cache-Control: no-cache.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      // litegraph keeps one eval for legacy graph-level "code" nodes we never use.
      onwarn(warning, warn) {
        if (warning.code === "EVAL" && warning.id?.includes("litegraph")) return;
        warn(warning);
      },
      output: {
        entryFileNames: "assets/loom.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
});
