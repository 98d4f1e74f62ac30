"""Opens a one-click unsubscribe link's page in headless Chromium (Debian's
chromium + chromium-driver, driven by selenium), checks that the page itself
changes nothing, presses its button, and prints what the browser ended on.

    /usr/bin/python3 unsubscribe.py URL SCREENSHOT_DIR

Prints one JSON object: the title and text of the page before and after the
click, and the URL after it. Run by cli/tests/api.rs.
"""
import json
import os
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from chrome import browser


def main():
    url, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    try:
        driver.get(url)
        before = {"title": driver.title, "text": driver.find_element(By.TAG_NAME, "body").text}
        driver.save_screenshot(os.path.join(shots, "unsubscribe-page.png"))
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(driver, 20).until(ec.title_is("Unsubscribed"))
        after = {"title": driver.title, "text": driver.find_element(By.TAG_NAME, "body").text,
                 "url": driver.current_url}
        driver.save_screenshot(os.path.join(shots, "unsubscribed.png"))
    finally:
        driver.quit()
    print(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main()
