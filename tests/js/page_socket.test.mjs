// The page socket client (static/socket.js) against a fake WebSocket: hello first, one reply
// per request id, errors as RequestError with the code, events to subscribers, reconnect.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { PageSocket, RequestError, backoff, socketUrl } from "../../src/sealcall/web/static/socket.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.onclose?.();
  }
  reply(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

test("the socket address is the page's path plus ws", () => {
  const loc = (pathname) => ({ protocol: "http:", host: "127.0.0.1:8123", pathname });
  assert.equal(socketUrl(loc("/s3cr3t/")), "ws://127.0.0.1:8123/s3cr3t/ws");
  assert.equal(socketUrl(loc("/s3cr3t/index.html")), "ws://127.0.0.1:8123/s3cr3t/ws");
});

test("backoff doubles from half a second up to ten", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(backoff), [500, 1000, 2000, 4000, 8000, 10000, 10000]);
});

test("hello goes first; requests wait for it; replies resolve or reject by id", async () => {
  FakeSocket.all = [];
  const sock = new PageSocket("ws://x/s/ws", true, FakeSocket);
  const opened = [];
  sock.on("open", (hello) => opened.push(hello));
  sock.connect();
  const ws = FakeSocket.all[0];
  const early = sock.request("list_rooms");
  ws.onopen();
  assert.equal(ws.sent.length, 1);
  assert.equal(ws.sent[0].type, "hello");
  assert.equal(ws.sent[0].e2ee, true);
  ws.reply({ type: "result", id: ws.sent[0].id, user_id: "@a:x" });
  await tick();
  assert.equal(opened[0].user_id, "@a:x");
  assert.equal(ws.sent[1].type, "list_rooms"); // sent once hello was answered
  const bad = sock.request("hangup", { call_id: "c" });
  assert.deepEqual(ws.sent[2], { type: "hangup", call_id: "c", id: ws.sent[2].id });
  ws.reply({ type: "error", id: ws.sent[2].id, code: "not_found", message: "no such call" });
  await assert.rejects(bad, (err) => err instanceof RequestError && err.code === "not_found");
  ws.reply({ type: "result", id: ws.sent[1].id, rooms: [] });
  assert.deepEqual((await early).rooms, []);
  // A second reply to the same id is not a reply any more: it goes nowhere.
  ws.reply({ type: "result", id: ws.sent[1].id, rooms: [1] });
  sock.close();
});

test("events reach their subscribers and '*'; junk is dropped", async () => {
  FakeSocket.all = [];
  const sock = new PageSocket("ws://x/s/ws", false, FakeSocket);
  const calls = [];
  const all = [];
  sock.on("call", (m) => calls.push(m.call_id));
  sock.on("*", (m) => all.push(m.type));
  sock.on("call", () => {
    throw new Error("a broken listener does not stop the others");
  });
  sock.connect();
  const ws = FakeSocket.all[0];
  const warn = console.warn;
  const error = console.error;
  console.warn = console.error = () => {};
  try {
    ws.reply({ type: "call", call_id: "c1" });
    ws.onmessage({ data: "not json" });
    ws.reply([1, 2]);
    ws.reply({ type: "incoming_call", call_id: "c1" });
  } finally {
    console.warn = warn;
    console.error = error;
  }
  assert.deepEqual(calls, ["c1"]);
  assert.deepEqual(all, ["call", "incoming_call"]);
  sock.close();
});

test("a closed socket fails its pending requests and reconnects, saying hello again", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  FakeSocket.all = [];
  const sock = new PageSocket("ws://x/s/ws", true, FakeSocket);
  sock.connect();
  const ws = FakeSocket.all[0];
  ws.onopen();
  ws.reply({ type: "result", id: ws.sent[0].id });
  await Promise.resolve();
  await Promise.resolve();
  const pending = sock.request("list_rooms");
  ws.onclose();
  await assert.rejects(pending, (err) => err.code === "failed");
  assert.equal(FakeSocket.all.length, 1);
  t.mock.timers.tick(backoff(0));
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.all[1].onopen();
  assert.equal(FakeSocket.all[1].sent[0].type, "hello");
  sock.close();
  t.mock.timers.tick(60000);
  assert.equal(FakeSocket.all.length, 2); // closed on purpose: no reconnect
});
