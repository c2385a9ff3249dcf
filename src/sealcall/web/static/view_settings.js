// The sidebar's settings: the relay-only switch (Signal: "Always relay calls").

import { h, fill } from "./dom.js";
import { RELAY_ONLY_TEXT } from "./settings.js";

export function renderSettings(el, setting, actions) {
  fill(
    el,
    h("h1", {}, "Settings"),
    h(
      "div",
      { class: "setting" },
      h(
        "button",
        {
          class: `switch${setting.on ? " on" : ""}`,
          role: "switch",
          "aria-checked": setting.on ? "true" : "false",
          "aria-describedby": "relay-only-help",
          "data-testid": "relay-only",
          disabled: setting.disabled,
          onclick: () => actions.setRelayOnly(!setting.on),
        },
        h("span", { class: "knob", "aria-hidden": "true" }),
        RELAY_ONLY_TEXT.label,
      ),
      h(
        "p",
        { id: "relay-only-help", class: "help" },
        RELAY_ONLY_TEXT.hides,
        " ",
        RELAY_ONLY_TEXT.costs,
      ),
      setting.note ? h("p", { class: "help note", "data-testid": "relay-only-note" }, setting.note) : null,
    ),
  );
}
