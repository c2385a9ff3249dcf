// A tiny element builder, h("button", {class: "x", "data-testid": "y", onclick: fn}, "text"),
// and fill(), which patches the live DOM to match new children instead of replacing it: a button
// that stays the same stays the same element, so a click that straddles a re-render (a speaker
// change, the call timer) still lands. Text goes in as text nodes (never HTML); handlers run
// through one delegated listener per event type (the page's CSP allows no inline handlers).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      const type = key.slice(2);
      (el.__on ??= {})[type] = value;
      delegate(type);
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

const delegated = new Set();
function delegate(type) {
  if (delegated.has(type)) return;
  delegated.add(type);
  document.addEventListener(type, (event) => {
    for (let node = event.target; node; node = node.parentNode) {
      const handler = node.__on?.[type];
      if (handler) {
        if (!node.disabled) handler(event);
        return;
      }
    }
  });
}

/** Make the children of `el` those given, patching the nodes already there where they match. */
export function fill(el, ...children) {
  const next = document.createElement(el.tagName);
  append(next, children);
  morphChildren(el, next);
  return el;
}

function morphChildren(old, next) {
  const kids = [...next.childNodes];
  kids.forEach((kid, i) => {
    const current = old.childNodes[i];
    if (!current) old.append(kid);
    else if (kid.nodeName === "VIDEO") {
      // A kept <video> (videoFor) is moved, never patched: it is the same element already.
      if (current !== kid) old.insertBefore(kid, current);
    } else morph(current, kid);
  });
  while (old.childNodes.length > kids.length) old.lastChild.remove();
}

function morph(old, next) {
  if (old.nodeType !== next.nodeType || old.nodeName !== next.nodeName || old.nodeName === "VIDEO") {
    old.replaceWith(next);
    return;
  }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== next.nodeValue) old.nodeValue = next.nodeValue;
    return;
  }
  // "style" goes through the CSSOM: the CSP refuses style attributes set as text.
  for (const { name } of [...old.attributes]) {
    if (name !== "style" && !next.hasAttribute(name)) old.removeAttribute(name);
  }
  for (const { name, value } of next.attributes) {
    if (name !== "style" && old.getAttribute(name) !== value) old.setAttribute(name, value);
  }
  old.__on = next.__on;
  if (next.style.cssText !== old.style.cssText) old.style.cssText = next.style.cssText;
  morphChildren(old, next);
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
