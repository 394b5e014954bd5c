/* The video gallery: asks the provider's JSON route for one page of cards and draws them.
 * No framework, no build step, no network but the api-server's own routes. Data only ever reaches the
 * page through textContent and attributes, never as HTML. */
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("config").textContent);
  const STATUSES = [
    ["all", "All"],
    ["succeeded", "Succeeded"],
    ["failed", "Failed"],
    ["waiting", "Waiting"],
    ["not_created", "Not created"],
  ];
  const PLACEHOLDER = { failed: "Failed", waiting: "Waiting…", not_created: "Not created yet" };
  const REFRESH_MS = 10000;
  const framed = window.top !== window;
  const state = { status: "all", offset: 0, bearer: null, timer: null, refreshedAfterError: false };

  // -- theme: follow Airflow's own choice (same origin: its local storage), else the system's --------
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  function applyTheme() {
    let mode = null;
    try {
      mode = localStorage.getItem("theme") || localStorage.getItem("chakra-ui-color-mode");
    } catch (err) {
      mode = null;
    }
    if (mode !== "dark" && mode !== "light") mode = dark.matches ? "dark" : "light";
    document.documentElement.dataset.theme = mode;
  }
  applyTheme();
  window.addEventListener("storage", applyTheme);
  dark.addEventListener("change", applyTheme);

  // -- helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function size(bytes) {
    if (bytes === null || bytes === undefined) return null;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
  }

  function when(iso) {
    if (!iso) return null;
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function message(text, kind) {
    const node = document.getElementById("message");
    node.textContent = text || "";
    node.className = kind || "";
  }

  // -- the JSON route: Airflow's login cookie (3.2+), else the UI's token (3.1 keeps it in local storage)
  async function getJSON(url) {
    const headers = { Accept: "application/json" };
    if (state.bearer) headers.Authorization = `Bearer ${state.bearer}`;
    const response = await fetch(url, { credentials: "same-origin", headers });
    if (response.status === 401 && !state.bearer) {
      let token = null;
      try {
        token = localStorage.getItem("token");
      } catch (err) {
        token = null;
      }
      if (token) {
        state.bearer = token;
        return getJSON(url);
      }
    }
    return response;
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (err) {
      return response.statusText;
    }
  }

  async function load() {
    clearTimeout(state.timer);
    const params = new URLSearchParams({ offset: String(state.offset), limit: String(config.page_size) });
    if (state.status !== "all") params.set("status", state.status);
    let response;
    try {
      response = await getJSON(`${config.api}?${params}`);
    } catch (err) {
      message(`Cannot reach the Airflow API server (${err.message}).`, "error");
      return;
    }
    if (!response.ok) {
      const why = await detail(response);
      const texts = {
        401: "Sign in to Airflow to see these videos.",
        403: `You may not read the videos of DAG ${config.scope.dag_id} (${why}).`,
        404: `Nothing to show: ${why}`,
      };
      message(texts[response.status] || `The API server answered ${response.status}: ${why}`, "error");
      return;
    }
    const data = await response.json();
    render(data);
    const live = data.counts.waiting + data.counts.not_created;
    if (live > 0) state.timer = setTimeout(refresh, REFRESH_MS);
  }

  function refresh() {
    const playing = [...document.querySelectorAll("video")].some((video) => !video.paused);
    if (playing) state.timer = setTimeout(refresh, REFRESH_MS);
    else load();
  }

  // -- drawing ---------------------------------------------------------------------------------------
  function render(data) {
    renderCounts(data.counts);
    const problems = document.getElementById("problems");
    problems.replaceChildren(...data.problems.map((text) => el("li", { text })));
    const grid = document.getElementById("grid");
    grid.replaceChildren(...data.items.map(card));
    if (data.total === 0) {
      message(
        data.counts.total === 0
          ? "No videos here: this stores none, or has not started yet."
          : "No video has this status.",
        "",
      );
    } else {
      message("", "");
    }
    renderPager(data);
  }

  function renderCounts(counts) {
    const holder = document.getElementById("counts");
    holder.replaceChildren(
      ...STATUSES.map(([status, label]) => {
        const count = status === "all" ? counts.total : counts[status];
        const button = el(
          "button",
          {
            type: "button",
            class: `count count-${status}`,
            "data-status": status,
            "aria-pressed": String(state.status === status),
          },
          el("span", { class: "count-number", text: String(count) }),
          el("span", { class: "count-label", text: label }),
        );
        button.addEventListener("click", () => {
          state.status = status;
          state.offset = 0;
          load();
        });
        return button;
      }),
    );
  }

  function renderPager(data) {
    const pager = document.getElementById("pager");
    if (data.total <= data.limit && data.offset === 0) {
      pager.replaceChildren();
      return;
    }
    const first = data.total === 0 ? 0 : data.offset + 1;
    const last = Math.min(data.offset + data.items.length, data.total);
    const previous = el("button", { type: "button", class: "page-previous", disabled: data.offset === 0 }, "Previous");
    const next = el(
      "button",
      { type: "button", class: "page-next", disabled: data.offset + data.limit >= data.total },
      "Next",
    );
    previous.addEventListener("click", () => {
      state.offset = Math.max(0, data.offset - data.limit);
      load();
    });
    next.addEventListener("click", () => {
      state.offset = data.offset + data.limit;
      load();
    });
    pager.replaceChildren(previous, el("span", { class: "page-range", text: `${first}–${last} of ${data.total}` }), next);
  }

  function player(item) {
    if (!item.video_url) {
      return el(
        "div",
        { class: "placeholder" },
        el("span", { text: PLACEHOLDER[item.status] || item.status }),
      );
    }
    // The gateway's thumbnail as the poster when one was stored; else the first frame (metadata only).
    const video = el("video", {
      controls: true,
      playsinline: true,
      preload: item.poster_url ? "none" : "metadata",
      poster: item.poster_url,
      src: item.poster_url ? item.video_url : `${item.video_url}#t=0.001`,
      "aria-label": item.prompt || item.key,
    });
    video.addEventListener("error", () => {
      // A signed link expired, or the file went away: ask for fresh links once.
      if (!state.refreshedAfterError) {
        state.refreshedAfterError = true;
        load();
      }
    });
    return video;
  }

  function card(item) {
    const facts = el("dl", { class: "facts" });
    const fact = (label, value) => {
      if (value === null || value === undefined || value === "") return;
      facts.append(el("dt", { text: label }), el("dd", { text: String(value), title: String(value) }));
    };
    fact("Key", item.key);
    fact("Task", item.map_index >= 0 ? `${item.task_id}[${item.map_index}]` : item.task_id);
    fact("Video task", item.video_task_id);
    fact("Created", when(item.created_at));
    fact("Stored", when(item.stored_at));
    fact("SHA-256", item.sha256 ? `${item.sha256.slice(0, 16)}…` : null);
    fact("Stored at", item.uri);

    const head = el(
      "div",
      { class: "head" },
      el("span", { class: `badge badge-${item.status}`, text: item.state }),
      item.model ? el("span", { class: "model", text: item.model }) : null,
      item.bytes !== null ? el("span", { class: "size", text: size(item.bytes) }) : null,
    );
    const body = el(
      "div",
      { class: "body" },
      head,
      el("p", { class: "prompt", text: item.prompt || "(no prompt recorded)", title: item.prompt }),
      item.error ? el("p", { class: "error", text: item.error }) : null,
      facts,
    );
    if (!framed && item.video_url) {
      body.append(el("a", { class: "open", href: item.video_url, target: "_blank", rel: "noopener" }, "Open the file"));
    }
    return el(
      "article",
      { class: `card card-${item.status}`, "data-key": item.key, "data-status": item.status },
      el("div", { class: "media" }, player(item)),
      body,
    );
  }

  // -- links -----------------------------------------------------------------------------------------
  const links = document.getElementById("links");
  if (config.run_gallery) links.append(el("a", { href: config.run_gallery }, "All videos of this run"));
  if (!framed && config.airflow_run) links.append(el("a", { href: config.airflow_run }, "This run in Airflow"));

  load();
})();
