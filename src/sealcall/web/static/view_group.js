// The group call screen: a grid of member tiles (video, or a placeholder with the name), who is
// speaking, and the controls.

import { h, fill, videoFor } from "./dom.js";
import { icon } from "./icons.js";
import { shortName } from "./format.js";
import { initial } from "./view_rooms.js";
import { controls, e2eeBadge, statsPanel, toggle } from "./view_call.js";
import { remoteByPurpose } from "./state.js";

const liveVideo = (stream) => (stream?.getVideoTracks() ?? []).some((t) => t.readyState === "live");

function tile({ key, name, stream, videoOff, speaking, active, muted, self, testUser, sender, pinned, onclick }) {
  const showVideo = stream && !videoOff && liveVideo(stream);
  const video = stream ? videoFor(key, stream, { muted: Boolean(self), mirror: Boolean(self) }) : null;
  if (video) video.hidden = !showVideo;
  return h(
    "div",
    {
      class: `tile member${speaking ? " speaking" : ""}${active ? " active" : ""}${pinned ? " pinned" : ""}`,
      "data-testid": "member-tile",
      "data-user": testUser,
      "data-user-id": testUser,
      "data-sender": sender,
      "data-video-muted": String(Boolean(videoOff)),
      "data-audio-muted": String(Boolean(muted)),
      "data-self": self ? "true" : null,
      "data-speaking": String(Boolean(speaking)),
      "data-active": String(Boolean(active)),
      "data-pinned": self ? null : String(Boolean(pinned)),
      title: self ? null : pinned ? "Show in the grid" : "Show large",
      onclick,
    },
    video,
    showVideo ? null : h("div", { class: "placeholder" }, h("span", { class: "avatar huge" }, initial(name))),
    h("div", { class: "tile-name" }, muted ? icon("mic-off", "muted") : null, name, self ? " (you)" : "", active ? " · speaking" : ""),
  );
}

export function renderGroup(el, group, room, me, ctx, actions) {
  const local = group.local;
  // Who speaks is measured in the page (ctx, from received audio levels); a `group` event that
  // names it (a stub page server) is shown as it says.
  const active = group.active_speaker ?? null;
  const activeSender = active === null ? ctx.activeSpeaker?.() : null;
  const tiles = [
    tile({
      key: `group:${group.room_id}:self`,
      name: me?.display_name || shortName(me?.user_id),
      stream: ctx.localStream(group.room_id),
      videoOff: local.video_muted,
      speaking: false,
      active: false,
      muted: local.audio_muted,
      self: true,
      testUser: me?.user_id,
    }),
    ...group.members.map((m) => {
      // A mesh member's streams come by its pair, an SFU member's by its sender (sfu.js).
      const source = m.pair_id ?? `sfu:${m.sender}`;
      const streams = ctx.remoteStreams(source);
      const { user, screen } = remoteByPurpose(streams, null);
      const parts = [
        tile({
          key: `group:${group.room_id}:${source}`,
          name: shortName(m.user_id),
          stream: user,
          videoOff: m.video_muted,
          speaking: m.speaking ?? ctx.speaking?.(m.sender),
          active: active !== null ? active === m.user_id : activeSender === m.sender,
          muted: m.audio_muted,
          testUser: m.user_id,
          sender: m.sender,
          pinned: ctx.pinned?.(group.room_id) === m.sender,
          onclick: () => actions.pin?.(group.room_id, m.sender),
        }),
      ];
      if (screen) {
        parts.push(h("div", { class: "tile screen", "data-testid": "member-screen" }, videoFor(`group:${group.room_id}:${source}:screen`, screen, { muted: true })));
      }
      return parts;
    }),
  ].flat();
  const count = tiles.length;
  const cols = count <= 1 ? 1 : count <= 4 ? 2 : 3;
  const grid = h("div", { class: "group-grid", "data-testid": "group-grid", "data-members": String(group.members.length) }, tiles);
  grid.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
  fill(
    el,
    h(
      "div",
      { class: "call-screen group", "data-testid": "group-screen", "data-room-id": group.room_id },
      h(
        "header",
        { class: "call-top" },
        h("div", {}, h("strong", {}, room?.name ?? "Group call"), h("span", { class: "sub" }, ` · ${group.members.length + 1} in call`)),
        e2eeBadge(ctx.lastStats(group.room_id), true),
      ),
      grid,
      ctx.statsOpen ? statsPanel(ctx.lastStats(group.room_id)) : null,
      controls(
        [
          toggle("mute", local.audio_muted, local.audio_muted ? "mic-off" : "mic", local.audio_muted ? "Unmute" : "Mute", () => actions.groupMute(group.room_id, { audio: !local.audio_muted })),
          toggle("camera", local.video_muted, local.video_muted ? "video-off" : "video", local.video_muted ? "Camera on" : "Camera off", () => actions.groupMute(group.room_id, { video: !local.video_muted })),
          toggle("screen", local.screen, "screen", local.screen ? "Stop sharing" : "Share screen", () => actions.groupScreen(group.room_id, !local.screen)),
          toggle("stats", ctx.statsOpen, "stats", "Stats", actions.toggleStats),
        ],
        h("button", { class: "btn round danger", "data-testid": "leave", title: "Leave", onclick: () => actions.groupLeave(group.room_id) }, icon("phone", "hangup"), h("span", {}, "Leave")),
      ),
    ),
  );
}

/** The banner of a room's call that rings us: Join (audio or video) or Decline. */
export function groupRingBanner(ring, actions) {
  const who = ring.sender ? shortName(ring.sender) : "Someone";
  return h(
    "div",
    { class: "banner ring", "data-testid": "group-ring", "data-room-id": ring.room_id, role: "alert" },
    h("div", { class: "ring-who" }, h("span", { class: "avatar big pulse" }, initial(ring.name)), h("div", {}, h("strong", {}, `${who} started a call in ${ring.name}`), h("div", { class: "sub" }, "Group call · end-to-end encrypted"))),
    h(
      "div",
      { class: "ring-actions" },
      h("button", { class: "btn danger", "data-testid": "group-decline", onclick: () => actions.declineGroup(ring.room_id) }, "Decline"),
      h("button", { class: "btn accept", "data-testid": "group-join-audio", disabled: !ring.can_join, onclick: () => actions.joinGroup(false, ring.room_id) }, icon("phone"), "Join"),
      h("button", { class: "btn accept", "data-testid": "group-join-video", disabled: !ring.can_join, onclick: () => actions.joinGroup(true, ring.room_id) }, icon("video"), "Join with video"),
    ),
  );
}
