// The page's settings panel as data (no DOM: Node tests it). Python holds each setting (its call
// policy); the page shows it and asks to change it with a request (docs/web-protocol.md).

export const RELAY_ONLY_TEXT = {
  label: "Always relay calls",
  hides: "Calls go through your homeserver's TURN relay, so the people you call never learn your IP address.",
  costs: "Costs a little call quality and delay, and calls fail when the homeserver offers no relay.",
};

/** What the relay-only switch shows: `on`, whether a change waits for Python, and the note. */
export function relaySetting(state, pending = false) {
  const inCall = Object.keys(state.calls ?? {}).length > 0 || Object.values(state.groups ?? {}).some((g) => g.joined);
  return {
    on: Boolean(state.relayOnly),
    disabled: pending || !state.connected,
    // The app applies a change to the calls placed, answered or joined afterwards only.
    note: inCall ? "A change applies to your next call, not to the one in progress." : null,
  };
}
