// The worker app's only script: register the service worker (installable app, cached shell).
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/w/sw.js", { scope: "/w" }).catch(() => {});
}
