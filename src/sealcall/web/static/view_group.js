// The group call screen: a grid of member tiles (video, or a placeholder with the name), who is
// speaking, and the controls.

import { h, fill, videoFor } from "./dom.js";
import { icon } from "./icons.js";
import { shortName } from "./format.js";
import { initial } from "./view_rooms.js";
import { controls, e2eeBadge, statsPanel, toggle } from "./view_call.js";
import { remoteByPurpose } from "./state.js";

const liveVideo = (stream) => (stream?.getVideoTracks() ?? []).some((t) => t.readyState === "live");

function tile({ key, name, stream, videoOff, speaking, active, muted, self, testUser }) {
  const showVideo = stream && !videoOff && liveVideo(stream);
  const video = stream ? videoFor(key, stream, { muted: Boolean(self), mirror: Boolean(self) }) : null;
  if (video) video.hidden = !showVideo;
  return h(
    "div",
    {
      class: `tile member${speaking ? " speaking" : ""}${active ? " active" : ""}`,
      "data-testid": "member-tile",
      "data-user": testUser,
      "data-self": self ? "true" : null,
      "data-speaking": String(Boolean(speaking)),
      "data-active": String(Boolean(active)),
    },
    video,
    showVideo ? null : h("div", { class: "placeholder" }, h("span", { class: "avatar huge" }, initial(name))),
    h("div", { class: "tile-name" }, muted ? icon("mic-off", "muted") : null, name, self ? " (you)" : "", active ? " · speaking" : ""),
  );
}

export function renderGroup(el, group, room, me, ctx, actions) {
  const local = group.local;
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
      const streams = ctx.remoteStreams(m.pair_id);
      const { user, screen } = remoteByPurpose(streams, null);
      const parts = [
        tile({
          key: `group:${group.room_id}:${m.pair_id}`,
          name: shortName(m.user_id),
          stream: user,
          videoOff: m.video_muted,
          speaking: m.speaking,
          active: group.active_speaker === m.user_id,
          muted: m.audio_muted,
          testUser: m.user_id,
        }),
      ];
      if (screen) {
        parts.push(h("div", { class: "tile screen", "data-testid": "member-screen" }, videoFor(`group:${group.room_id}:${m.pair_id}:screen`, screen, { muted: true })));
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
