// srkit comparison report: before/after sliders and synchronised zoomed crops.
// Reads the image list from the JSON in #report-data; needs nothing from the network.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const labels = new Map(data.versions.map((version) => [version.key, version.label]));
  const KEY_STEP = 0.02;

  function setUpImage(section) {
    const info = data.images[Number(section.dataset.image)];
    const compare = section.querySelector(".compare");
    const left = compare.querySelector("img.left");
    const right = compare.querySelector("img.right");
    const divider = compare.querySelector(".divider");
    const lens = compare.querySelector(".lens");
    const tagLeft = compare.querySelector(".tag-left");
    const tagRight = compare.querySelector(".tag-right");
    const pickLeft = section.querySelector("select.pick-left");
    const pickRight = section.querySelector("select.pick-right");
    const pickZoom = section.querySelector("select.zoom");
    const crops = Array.from(section.querySelectorAll(".crop"));
    const centre = { x: info.width / 2, y: info.height / 2 };
    let position = 0.5;
    let dragging = null;

    // The slider: the left image shows left of the divider, the right image right of it.
    function setPosition(fraction) {
      position = Math.min(1, Math.max(0, fraction));
      const percent = position * 100;
      left.style.clipPath = "inset(0 " + (100 - percent) + "% 0 0)";
      divider.style.left = percent + "%";
      compare.setAttribute("aria-valuenow", percent.toFixed(0));
      compare.dataset.position = position.toFixed(4);
    }

    function fractionAt(event) {
      const box = compare.getBoundingClientRect();
      return {
        x: (event.clientX - box.left) / box.width,
        y: (event.clientY - box.top) / box.height,
      };
    }

    // The crops: every version, magnified around the same image point.
    function updateCrops() {
      const zoom = Number(pickZoom.value);
      let side = 0;
      for (const crop of crops) {
        const windowBox = crop.querySelector(".window");
        const image = crop.querySelector("img");
        side = windowBox.clientWidth;
        image.style.width = info.width * zoom + "px";
        image.style.height = info.height * zoom + "px";
        image.style.left = side / 2 - centre.x * zoom + "px";
        image.style.top = side / 2 - centre.y * zoom + "px";
      }
      const shown = side / zoom; // image pixels a crop shows
      lens.style.left = ((centre.x - shown / 2) / info.width) * 100 + "%";
      lens.style.top = ((centre.y - shown / 2) / info.height) * 100 + "%";
      lens.style.width = (shown / info.width) * 100 + "%";
      lens.style.height = (shown / info.height) * 100 + "%";
    }

    function setCentre(point) {
      centre.x = Math.min(info.width, Math.max(0, point.x * info.width));
      centre.y = Math.min(info.height, Math.max(0, point.y * info.height));
      updateCrops();
    }

    function showVersion(image, tag, key) {
      image.src = info.files[key];
      tag.textContent = labels.get(key);
    }

    compare.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      dragging = event.pointerId;
      compare.setPointerCapture(event.pointerId);
      compare.focus({ preventScroll: true });
      setPosition(fractionAt(event).x);
      event.preventDefault();
    });
    compare.addEventListener("pointermove", (event) => {
      const point = fractionAt(event);
      if (dragging === event.pointerId) setPosition(point.x);
      else setCentre(point);
    });
    const stop = (event) => {
      if (dragging === event.pointerId) dragging = null;
    };
    compare.addEventListener("pointerup", stop);
    compare.addEventListener("pointercancel", stop);
    compare.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: -KEY_STEP, ArrowRight: KEY_STEP, Home: -1, End: 1 };
      if (event.key in moves) {
        setPosition(position + moves[event.key]);
        event.preventDefault();
      }
    });
    pickLeft.addEventListener("change", () => showVersion(left, tagLeft, pickLeft.value));
    pickRight.addEventListener("change", () => showVersion(right, tagRight, pickRight.value));
    pickZoom.addEventListener("change", updateCrops);
    window.addEventListener("resize", updateCrops);

    setPosition(position);
    updateCrops();
  }

  document.querySelectorAll("section.image").forEach(setUpImage);

  // Mark the page ready once every picture is decoded (screenshots and tests wait for this).
  Promise.all(
    Array.from(document.images).map((image) => image.decode().catch(() => undefined))
  ).then(() => {
    document.documentElement.dataset.ready = "true";
  });
})();
