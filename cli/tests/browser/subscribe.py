"""Fills a list's subscribe form in headless Chromium (Debian's chromium +
chromium-driver, driven by selenium) and presses its button, or opens a
confirmation link; prints what the browser ended on.

    /usr/bin/python3 subscribe.py form URL EMAIL FIRST_NAME SCREENSHOT_DIR
    /usr/bin/python3 subscribe.py confirm URL SCREENSHOT_DIR

Prints one JSON object: the title and text of the page (before and after
the click, for the form). Run by cli/tests/lists.rs.
"""
import json
import os
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from chrome import browser


def seen(driver):
    return {"title": driver.title, "text": driver.find_element(By.TAG_NAME, "body").text,
            "url": driver.current_url}


def main():
    mode = sys.argv[1]
    driver = browser()
    try:
        if mode == "form":
            url, email, name, shots = sys.argv[2:6]
            os.makedirs(shots, exist_ok=True)
            driver.get(url)
            before = seen(driver)
            driver.find_element(By.NAME, "email").send_keys(email)
            driver.find_element(By.NAME, "first_name").send_keys(name)
            driver.save_screenshot(os.path.join(shots, "subscribe-form.png"))
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            WebDriverWait(driver, 20).until(ec.title_is("Check your inbox"))
            after = seen(driver)
            driver.save_screenshot(os.path.join(shots, "subscribe-check-inbox.png"))
            print(json.dumps({"before": before, "after": after}))
        else:
            url, shots = sys.argv[2:4]
            os.makedirs(shots, exist_ok=True)
            driver.get(url)
            page = seen(driver)
            driver.save_screenshot(os.path.join(shots, "subscribe-confirmed.png"))
            print(json.dumps({"after": page}))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
