// ComfyUI-LDDGAN frontend extension: a model written by LDDGAN Save Model or LDDGAN Fine-Tune appears in every
// LDDGAN Model Loader's list as soon as that node has run. The frontend keeps the node definitions it loaded, so
// this fetches them again (what R, "Refresh Node Definitions", does) after one of those nodes reports a result.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const WRITERS = new Set(["LDDGANSaveModel", "LDDGANFineTune"]);

app.registerExtension({
  name: "lddgan.refreshModelList",
  setup() {
    api.addEventListener("executed", ({ detail }) => {
      const id = detail?.display_node ?? detail?.node;
      const node = id == null ? null : app.graph?.getNodeById?.(id);
      if (node && WRITERS.has(node.type)) {
        app.refreshComboInNodes().catch((e) => console.error("LDDGAN: refreshing the model list failed", e));
      }
    });
  },
});
