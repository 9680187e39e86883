/**
 * Plugin extensions for the editor. A plugin's `WEB_DIRECTORY` files are served under `/extensions/<plugin>/`
 * and `GET /extensions` lists their module URLs; each is imported at start. A module's default export is a
 * function that receives the extension API (or an object with such a `setup` function):
 *
 *   export default function register(editor) {
 *     editor.registerWidget({ name, matches(nodeType, inputName, spec), create(container, value, onChange, context) });
 *     editor.addNodeMenuItem({ label, matches(node), action(node) });
 *     editor.onNodeCreated((nodeView) => { ... });
 *     editor.beforeQueue(({ prompt, workflow }) => { ... });
 *   }
 *
 * plus `editor.graph`, `editor.api`, `editor.toast(message)`, `editor.addNode(type, [x, y])` and
 * `editor.queue()`. web/README.md documents it. A failing extension is reported and skipped; it never stops
 * the editor. Knows nothing of the DOM.
 */

export class ExtensionError extends Error {}

export class ExtensionRegistry {
  constructor(app) {
    this.app = app;
    this.widgets = [];
    this.menuItems = [];
    this.nodeCreatedHooks = [];
    this.beforeQueueHooks = [];
  }

  /** The object an extension module is given; `source` names it in error messages. */
  apiFor(source) {
    const registry = this;
    const app = this.app;
    const hook = (list, what) => (fn) => {
      if (typeof fn !== "function") throw new ExtensionError(`${source}: ${what} needs a function`);
      list.push({ source, fn });
    };
    return {
      registerWidget(widget) {
        if (!widget || typeof widget.matches !== "function" || typeof widget.create !== "function") {
          throw new ExtensionError(`${source}: registerWidget needs {name, matches(nodeType, inputName), create(...)}`);
        }
        registry.widgets.push({ source, name: widget.name ?? source, matches: widget.matches, create: widget.create });
        app.extensionsChanged?.();
      },
      addNodeMenuItem(item) {
        if (!item || typeof item.label !== "string" || typeof item.action !== "function") {
          throw new ExtensionError(`${source}: addNodeMenuItem needs {label, action(node)}`);
        }
        registry.menuItems.push({ source, ...item });
      },
      onNodeCreated: hook(this.nodeCreatedHooks, "onNodeCreated"),
      beforeQueue: hook(this.beforeQueueHooks, "beforeQueue"),
      get graph() {
        return app.graph;
      },
      get api() {
        return app.api;
      },
      toast: (message, options) => app.toast(message, options),
      addNode: (type, pos) => app.addNode(type, pos),
      queue: () => app.queue(),
    };
  }

  report(source, what, error) {
    this.app.reportExtensionError?.(source, what, error);
  }

  /** The first registered widget that claims this input, or null. */
  widgetFor(nodeType, inputName, spec) {
    for (const widget of this.widgets) {
      try {
        if (widget.matches(nodeType, inputName, spec)) return widget;
      } catch (error) {
        this.report(widget.source, "matches", error);
      }
    }
    return null;
  }

  nodeMenuItems(node) {
    return this.menuItems.filter((item) => {
      try {
        return typeof item.matches !== "function" || item.matches(node);
      } catch (error) {
        this.report(item.source, "matches", error);
        return false;
      }
    });
  }

  nodeCreated(view) {
    for (const { source, fn } of this.nodeCreatedHooks) {
      try {
        fn(view);
      } catch (error) {
        this.report(source, "onNodeCreated", error);
      }
    }
  }

  async beforeQueue(request) {
    for (const { source, fn } of this.beforeQueueHooks) {
      try {
        await fn(request);
      } catch (error) {
        this.report(source, "beforeQueue", error);
      }
    }
  }
}

/** Import each module URL and run its registration; returns [{url, error}] for those that failed. */
export async function loadExtensions(urls, registry, importModule = (url) => import(url)) {
  const failures = [];
  for (const url of urls) {
    try {
      const module = await importModule(url);
      const exported = module?.default;
      const register = typeof exported === "function" ? exported : exported?.setup;
      if (typeof register !== "function") {
        throw new ExtensionError("the module's default export is neither a function nor an object with setup()");
      }
      await register.call(exported, registry.apiFor(url));
    } catch (error) {
      failures.push({ url, error });
    }
  }
  return failures;
}
