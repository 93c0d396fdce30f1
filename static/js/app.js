// Copy buttons, confirmations and the upload progress bar. Pages work without this file.
function copyText(text) {
  // navigator.clipboard exists only on https or localhost; plain-http deployments use the old way.
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  return new Promise((resolve, reject) => {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (ok) { resolve(); } else { reject(new Error("copy refused")); }
  });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  // The first label, not the current one: a second click while "Copied" shows must not keep it.
  const label = (button.dataset.label ??= button.textContent);
  copyText(button.dataset.copy).then(
    () => { button.textContent = "Copied"; },
    () => {
      button.textContent = "Select and copy";
      // A hash cut short on a phone (_hash.html) is still whole in the text: select it for the user.
      const value = button.closest(".hash-copy")?.querySelector("code.hash");
      if (value) window.getSelection().selectAllChildren(value);
    },
  ).finally(() => { setTimeout(() => { button.textContent = label; }, 1200); });
});

document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("file-input");
  const drop = document.getElementById("drop");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const maxBytes = Number(form.dataset.maxBytes);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; }
  });
  form.addEventListener("submit", (e) => {
    const file = input.files[0];
    if (!file) return;
    e.preventDefault();
    if (file.size > maxBytes) {
      status.textContent = `This file is ${file.size.toLocaleString()} bytes; the limit is ${maxBytes.toLocaleString()} bytes.`;
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    bar.hidden = false;
    const started = Date.now();
    xhr.upload.addEventListener("progress", (p) => {
      if (!p.lengthComputable) return;
      bar.value = Math.round((p.loaded / p.total) * 100);
      const rate = p.loaded / Math.max(1, (Date.now() - started) / 1000);
      status.textContent = `Uploading: ${bar.value}% (${(rate / 1e6).toFixed(1)} MB/s)`;
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if ((xhr.status === 201 || xhr.status === 200) && body.url) {
        // 200: the same bytes are already one of my files; its page says so.
        status.textContent = body.already_had ? "You already have this file." : "Uploaded. Hashing…";
        window.location.href = body.url;
      }
      else { status.textContent = body.error || `Upload failed (HTTP ${xhr.status}).`; }
    });
    xhr.addEventListener("error", () => { status.textContent = "The upload was interrupted (network error or the server refused it)."; });
    const data = new FormData();
    data.append("file", file);
    xhr.send(data);
  });
}
document.addEventListener("DOMContentLoaded", setupUpload);

// Previews above the viewer's NSFW level show their blurhash under a CSS blur; the image itself is fetched
// only when clicked, and a click shows that one only.
document.addEventListener("click", (event) => {
  const figure = event.target.closest(".preview.nsfw-blur");
  if (!figure) return;
  event.preventDefault();
  const img = figure.querySelector("img[data-full]");
  if (img) { img.src = img.dataset.full; img.removeAttribute("data-full"); }
  figure.classList.remove("nsfw-blur");
  figure.querySelector("button.unblur")?.remove();
});
