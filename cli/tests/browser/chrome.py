"""Headless Chromium (Debian's chromium + chromium-driver) driven by
selenium, as the browser scripts beside this file start it."""

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def browser(width=800, height=600):
    """A headless Chromium of that window size; pages time out after 20 s."""
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(20)
    return driver
