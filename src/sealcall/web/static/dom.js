// A tiny element builder: h("button", {class: "x", "data-testid": "y", onclick: fn}, "text").
// Text goes in as text nodes (never HTML), handlers through addEventListener (the page's CSP
// allows no inline handlers).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "disabled" || key === "hidden") {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A <video> element kept across renders (a new one each render would flicker and restart). */
const videos = new Map();
export function videoFor(key, stream, { muted = false, mirror = false } = {}) {
  let v = videos.get(key);
  if (!v) {
    v = document.createElement("video");
    v.autoplay = true;
    v.playsInline = true;
    videos.set(key, v);
  }
  v.muted = muted;
  v.classList.toggle("mirror", mirror);
  if (v.srcObject !== stream) v.srcObject = stream;
  return v;
}

/** Forget the kept <video> elements whose key starts with `prefix`. */
export function dropVideos(prefix) {
  for (const [key, v] of videos) {
    if (key.startsWith(prefix)) {
      v.srcObject = null;
      videos.delete(key);
    }
  }
}
